//! The dereference step: reads the Secrets a cluster needs — its credentials Secret
//! (`storage.credentialsSecretRef`) and its signing key (the Secret of `auth.signingKeySecretRef`,
//! else the generated `{name}-signing-key`) — and says what is wrong with them. It only reads:
//! a generated key Secret that does not exist yet is created by the apply step.
//!
//! A missing or incomplete Secret is not an error of the reconcile (DESIGN §5): it becomes a
//! [`Problem`] that the status step reports in `Degraded`, and the children are applied all the
//! same. Only a failed read is an [`Error::Dereference`].

use crds::LfusysCluster;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::{Client, ResourceExt};

use super::Error;
use crate::build::{self, PRIVATE_KEY_ITEM, PUBLIC_KEY_ITEM};
use crate::conditions::Problem;
use crate::queue::StaticCredentials;

/// The signing key Secret the pods mount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SigningKey {
    /// Used as it is: the spec's Secret (a missing one is a problem), or the generated one an
    /// earlier reconcile created.
    Use(String),
    /// The generated Secret of this name does not exist yet: the apply step creates it.
    Generate(String),
}

impl SigningKey {
    #[must_use]
    pub fn secret_name(&self) -> &str {
        match self {
            Self::Use(name) | Self::Generate(name) => name,
        }
    }
}

/// What the dereference step found: the Secrets the pods need and their problems.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dependencies {
    pub signing_key: SigningKey,
    /// The credentials Secret's keys, when the spec names one and it is usable.
    pub credentials: Option<StaticCredentials>,
    /// Versions of the Secrets the pods read at start: a change rolls the pods.
    pub secret_versions: Vec<String>,
    pub problems: Vec<Problem>,
}

impl Dependencies {
    /// The spec names a credentials Secret that is missing or unusable.
    #[must_use]
    pub fn credentials_missing(&self, cluster: &LfusysCluster) -> bool {
        cluster.spec.storage.credentials_secret_ref.is_some() && self.credentials.is_none()
    }
}

/// Reads what `cluster` depends on.
///
/// # Errors
/// [`Error::Dereference`] when a Secret cannot be read (not when it is absent).
pub async fn dereference(
    client: &Client,
    cluster: &LfusysCluster,
    namespace: &str,
) -> Result<Dependencies, Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut secret_versions = Vec::new();
    let mut problems = Vec::new();
    let mut credentials = None;
    if let Some(reference) = &cluster.spec.storage.credentials_secret_ref {
        match read(&secrets, &reference.name).await? {
            None => problems.push(Problem {
                reason: "CredentialsSecretMissing".into(),
                message: format!(
                    "Secret {} (spec.storage.credentialsSecretRef) not found",
                    reference.name
                ),
            }),
            Some(secret) => {
                secret_versions.push(secret.resource_version().unwrap_or_default());
                match static_credentials(&secret) {
                    Some(found) => credentials = Some(found),
                    None => problems.push(Problem {
                        reason: "CredentialsSecretInvalid".into(),
                        message: format!(
                            "Secret {} needs the keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                            reference.name
                        ),
                    }),
                }
            }
        }
    }
    let signing_key = if let Some(reference) = &cluster.spec.auth.signing_key_secret_ref {
        match read(&secrets, &reference.name).await? {
            None => problems.push(Problem {
                reason: "SigningKeySecretMissing".into(),
                message: format!(
                    "Secret {} (spec.auth.signingKeySecretRef) not found",
                    reference.name
                ),
            }),
            Some(secret) => {
                secret_versions.push(secret.resource_version().unwrap_or_default());
                problems.extend(signing_key_problem(&secret, &reference.name));
            }
        }
        SigningKey::Use(reference.name.clone())
    } else {
        let name = build::generated_signing_key_name(cluster);
        match read(&secrets, &name).await? {
            None => SigningKey::Generate(name),
            Some(secret) => {
                secret_versions.push(secret.resource_version().unwrap_or_default());
                problems.extend(signing_key_problem(&secret, &name));
                SigningKey::Use(name)
            }
        }
    };
    Ok(Dependencies {
        signing_key,
        credentials,
        secret_versions,
        problems,
    })
}

async fn read(secrets: &Api<Secret>, name: &str) -> Result<Option<Secret>, Error> {
    secrets
        .get_opt(name)
        .await
        .map_err(|source| Error::Dereference {
            what: format!("reading Secret {name}"),
            source,
        })
}

/// The AWS keys of a credentials Secret; `None` when a required one is missing or empty.
fn static_credentials(secret: &Secret) -> Option<StaticCredentials> {
    let get = |key: &str| secret_string(secret, key);
    Some(StaticCredentials {
        access_key_id: get("AWS_ACCESS_KEY_ID")?,
        secret_access_key: get("AWS_SECRET_ACCESS_KEY")?,
        session_token: get("AWS_SESSION_TOKEN"),
    })
}

/// A non-empty UTF-8 value of `secret` (`data`, else `stringData`).
fn secret_string(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key).cloned())
        })
        .filter(|v| !v.is_empty())
}

fn signing_key_problem(secret: &Secret, name: &str) -> Option<Problem> {
    let missing: Vec<&str> = [PRIVATE_KEY_ITEM, PUBLIC_KEY_ITEM]
        .into_iter()
        .filter(|k| secret_string(secret, k).is_none())
        .collect();
    (!missing.is_empty()).then(|| Problem {
        reason: "SigningKeySecretInvalid".into(),
        message: format!("Secret {name} lacks {}", missing.join(" and ")),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;

    fn secret(data: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn credentials_need_both_keys_and_take_an_optional_token() {
        let full = secret(&[
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "SECRET"),
            ("AWS_SESSION_TOKEN", "TOKEN"),
        ]);
        assert_eq!(
            static_credentials(&full),
            Some(StaticCredentials {
                access_key_id: "AKID".into(),
                secret_access_key: "SECRET".into(),
                session_token: Some("TOKEN".into()),
            })
        );
        let no_token = secret(&[("AWS_ACCESS_KEY_ID", "A"), ("AWS_SECRET_ACCESS_KEY", "S")]);
        assert_eq!(static_credentials(&no_token).unwrap().session_token, None);
        // An empty value counts as missing.
        let empty = secret(&[("AWS_ACCESS_KEY_ID", "A"), ("AWS_SECRET_ACCESS_KEY", "")]);
        assert_eq!(static_credentials(&empty), None);
        assert_eq!(static_credentials(&Secret::default()), None);
    }

    #[test]
    fn string_data_is_read_when_data_lacks_the_key() {
        let s = Secret {
            string_data: Some(BTreeMap::from([("K".to_owned(), "v".to_owned())])),
            ..Secret::default()
        };
        assert_eq!(secret_string(&s, "K").as_deref(), Some("v"));
        assert_eq!(secret_string(&s, "other"), None);
    }

    #[test]
    fn a_signing_key_secret_needs_both_pem_items() {
        let both = secret(&[(PRIVATE_KEY_ITEM, "PRIV"), (PUBLIC_KEY_ITEM, "PUB")]);
        assert_eq!(signing_key_problem(&both, "keys"), None);
        let public_only = secret(&[(PUBLIC_KEY_ITEM, "PUB")]);
        let problem = signing_key_problem(&public_only, "keys").unwrap();
        assert_eq!(problem.reason, "SigningKeySecretInvalid");
        assert_eq!(problem.message, "Secret keys lacks signing-key.pem");
        let problem = signing_key_problem(&Secret::default(), "keys").unwrap();
        assert_eq!(
            problem.message,
            "Secret keys lacks signing-key.pem and signing-key.pub.pem"
        );
    }
}
