use std::collections::BTreeMap;

use crds::LfusysCluster;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use super::child_meta;

/// Key of the private key (PKCS#8 PEM) in a signing key Secret.
pub const PRIVATE_KEY_ITEM: &str = "signing-key.pem";
/// Key of the public key (SPKI PEM) in a signing key Secret.
pub const PUBLIC_KEY_ITEM: &str = "signing-key.pub.pem";

/// Name of the Secret the operator generates when the spec names none.
#[must_use]
pub fn generated_signing_key_name(cluster: &LfusysCluster) -> String {
    format!("{}-signing-key", cluster.name_any())
}

/// `{name}-signing-key`: the key pair the operator generated. Created once and never replaced
/// (a new key would sign out every user), owned by the cluster so it goes with it.
#[must_use]
pub fn signing_key_secret(cluster: &LfusysCluster, private_pem: &str, public_pem: &str) -> Secret {
    Secret {
        metadata: child_meta(cluster, generated_signing_key_name(cluster), None),
        type_: Some("Opaque".into()),
        string_data: Some(BTreeMap::from([
            (PRIVATE_KEY_ITEM.to_owned(), private_pem.to_owned()),
            (PUBLIC_KEY_ITEM.to_owned(), public_pem.to_owned()),
        ])),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::minimal;
    use super::*;

    #[test]
    fn holds_both_keys_and_is_owned() {
        let s = signing_key_secret(&minimal(), "PRIV", "PUB");
        assert_eq!(s.metadata.name.as_deref(), Some("files-signing-key"));
        let data = s.string_data.unwrap();
        assert_eq!(data[PRIVATE_KEY_ITEM], "PRIV");
        assert_eq!(data[PUBLIC_KEY_ITEM], "PUB");
        assert!(s.metadata.owner_references.is_some());
    }
}
