//! Property tests of every parser of what clients send (issue 14's hostile input): `Range`,
//! `Content-Digest`, hex digests, sizes and tokens. Whatever the input, a parser answers — an
//! error the caller turns into its documented 4xx, never a panic — and what it accepts is
//! within bounds; what the formatters write parses back to the same value.

#![allow(clippy::unwrap_used)]

use std::sync::OnceLock;

use lfusys_core::clock::now_ms;
use lfusys_core::digest::{
    format_content_digest, parse_content_digest, parse_hex, to_hex, DigestError,
};
use lfusys_core::plan::UploadPlan;
use lfusys_core::range::{parse_range, ByteRange, RangeRequest};
use lfusys_core::tokens::TokenSigner;
use lfusys_core::units::parse_size;
use proptest::prelude::*;

/// One signer for the whole run: generating a key pair is slow.
fn signer() -> &'static TokenSigner {
    static SIGNER: OnceLock<TokenSigner> = OnceLock::new();
    SIGNER.get_or_init(|| TokenSigner::generate().unwrap())
}

/// Header-like text: printable ASCII with the characters the parsers split on, often.
fn header_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ -~]{0,40}",
        "(bytes=)?[0-9 ,=:;-]{0,24}",
        "(sha-256|sha-512|SHA-256)=:[A-Za-z0-9+/=]{0,60}:(;[a-z]=[0-9])?",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn a_range_is_within_the_representation(header in header_text(), total in 0u64..1 << 50) {
        match parse_range(Some(&header), total) {
            RangeRequest::Partial(r) => {
                prop_assert!(r.start <= r.end && r.end < total, "{header:?} of {total}: {r:?}");
                prop_assert_eq!(r.len(), r.end - r.start + 1);
            }
            RangeRequest::Full | RangeRequest::Unsatisfiable => {}
        }
    }

    #[test]
    fn well_formed_ranges_are_read_exactly(a in 0u64..1 << 40, len in 1u64..1 << 20, total in 1u64..1 << 41) {
        let b = a + len - 1;
        let expected = if a >= total {
            RangeRequest::Unsatisfiable
        } else {
            RangeRequest::Partial(ByteRange { start: a, end: b.min(total - 1) })
        };
        prop_assert_eq!(parse_range(Some(&format!("bytes={a}-{b}")), total), expected);
        // The suffix form: the last `len` bytes.
        prop_assert_eq!(
            parse_range(Some(&format!("bytes=-{len}")), total),
            RangeRequest::Partial(ByteRange { start: total.saturating_sub(len), end: total - 1 })
        );
    }

    #[test]
    fn content_digest_never_panics(header in header_text()) {
        match parse_content_digest(&header) {
            Ok(d) => prop_assert!(d.sha256.is_some() || d.crc64nvme.is_some()),
            Err(
                DigestError::NoKnownAlgorithm
                | DigestError::Malformed(_)
                | DigestError::WrongLength { .. },
            ) => {}
            Err(e) => prop_assert!(false, "{header:?}: {e}"),
        }
    }

    #[test]
    fn content_digest_round_trips_among_other_members(
        digest in any::<[u8; 32]>(),
        before in "(sha-512=:[A-Za-z0-9+/]{4}:, )?",
        params in "(;[a-z]{1,3}=[0-9]{1,3})?",
    ) {
        let header = format!("{before}{}{params}", format_content_digest(&digest));
        prop_assert_eq!(parse_content_digest(&header).map(|d| d.sha256), Ok(Some(digest)));
    }

    #[test]
    fn hex_digests_round_trip_and_nothing_else_parses(digest in any::<[u8; 32]>(), text in any::<String>()) {
        prop_assert_eq!(parse_hex(&to_hex(&digest)), Ok(digest));
        prop_assert_eq!(parse_hex(&to_hex(&digest).to_uppercase()), Ok(digest));
        let hexadecimal = text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit());
        prop_assert_eq!(parse_hex(&text).is_ok(), hexadecimal, "{:?}", text);
    }

    #[test]
    fn sizes_never_panic_and_units_multiply(text in any::<String>(), n in 0u64..1 << 40) {
        let _ = parse_size(&text);
        prop_assert_eq!(parse_size(&n.to_string()), Ok(n));
        prop_assert_eq!(parse_size(&format!("{n}KiB")), Ok(n * 1024));
        prop_assert_eq!(parse_size(&format!(" {n} MB ")), Ok(n * 1_000_000));
        let past_u64 = (u128::from(u64::MAX) + 1).to_string();
        prop_assert!(parse_size(&past_u64).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn arbitrary_text_is_no_token(text in any::<String>(), dotted in "[A-Za-z0-9_-]{0,30}\\.[A-Za-z0-9_-]{0,30}\\.[A-Za-z0-9_-]{0,40}") {
        let verifier = signer().verifier();
        for t in [&text, &dotted] {
            prop_assert!(verifier.verify_access(t).is_err());
            prop_assert!(verifier.verify_upload(t).is_err());
        }
    }

    #[test]
    fn a_token_changed_anywhere_is_refused(at in any::<prop::sample::Index>(), with in "[A-Za-z0-9_.-]") {
        let now = now_ms() / 1000;
        let token = signer()
            .sign_upload("user-1", "upload-1", UploadPlan::new(10 << 20, 1 << 20), now, 600)
            .unwrap();
        let verifier = signer().verifier();
        prop_assert!(verifier.verify_upload(&token).is_ok());
        let i = at.index(token.len());
        let mut changed = token.clone().into_bytes();
        changed[i] = with.as_bytes()[0];
        let changed = String::from_utf8(changed).unwrap();
        if changed != token {
            prop_assert!(verifier.verify_upload(&changed).is_err(), "accepted with byte {i} changed");
        }
        // Never accepted where the other kind of token is expected.
        prop_assert!(verifier.verify_access(&token).is_err());
    }
}
