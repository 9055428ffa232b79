//! Byte sizes as people write them (`16MiB`, `2GiB`, `500MB`) and as people read them.

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const TIB: u64 = 1024 * 1024 * MIB;

/// Parses a byte size: `1048576`, `16MiB`, `8M`, `1.5GiB`, `500MB`, `5 TiB`.
pub fn parse_size(value: &str) -> Result<u64, String> {
    let value = value.trim();
    let split = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "ki" | "kib" => KIB,
        "m" | "mi" | "mib" => MIB,
        "g" | "gi" | "gib" => 1024 * MIB,
        "t" | "ti" | "tib" => TIB,
        "kb" => 1000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (use bytes or K, M, G, T, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"
            ))
        }
    };
    let invalid = || format!("expected a size such as 16MiB or 1048576, got {value:?}");
    if number.is_empty() {
        return Err(invalid());
    }
    if let Ok(n) = number.parse::<u64>() {
        return n
            .checked_mul(multiplier)
            .ok_or_else(|| "the size is too large".to_owned());
    }
    // Fractions only make sense with a unit ("1.5GiB"); the result must be whole bytes.
    let fraction: f64 = number.parse().map_err(|_| invalid())?;
    let bytes = fraction * multiplier as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err("the size is too large".to_owned());
    }
    if bytes.fract() != 0.0 {
        return Err(format!("{value:?} is not a whole number of bytes"));
    }
    Ok(bytes as u64)
}

/// `1.5 GiB`, `512 B`: binary units, one decimal.
pub fn format_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(MIB));
        assert_eq!(parse_size("16MiB"), Ok(16 * MIB));
        assert_eq!(parse_size("8M"), Ok(8 * MIB));
        assert_eq!(parse_size("8 mi"), Ok(8 * MIB));
        assert_eq!(parse_size("5TiB"), Ok(5 * TIB));
        assert_eq!(parse_size("5t"), Ok(5 * TIB));
        assert_eq!(parse_size("1.5GiB"), Ok(1536 * MIB));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("64k"), Ok(64 * KIB));
        assert_eq!(parse_size("10B"), Ok(10));
        assert!(parse_size("").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("-5").is_err());
        assert!(parse_size("0.5").is_err());
        assert!(parse_size("99999999999999999999T").is_err());
        assert!(parse_size("99999999T").is_err());
    }

    #[test]
    fn formats_sizes() {
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(1536), "1.5 KiB");
        assert_eq!(format_size(2 << 30), "2.0 GiB");
    }
}
