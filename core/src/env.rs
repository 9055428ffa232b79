//! Configuration from the environment: the one way every LFUSYS binary reads its `LFUSYS_*`
//! variables, and the one error a bad value gives.
//!
//! - A variable that is unset, empty or only blanks is unset (a Pod's `value: ""` means "use the
//!   default", as it does for the ConfigMap the operator writes).
//! - Values are trimmed before they are parsed.
//! - A value that cannot be used is an error naming the variable, the value and what was
//!   expected; it is never silently replaced by the default or clamped.
//!
//! Readers take an [`Env`], so tests pass a table of variables instead of touching the
//! process environment.

use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

use crate::units::parse_size;

/// A configuration value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {var}={value:?}: {reason}")]
pub struct ConfigError {
    pub var: &'static str,
    pub value: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(var: &'static str, value: impl Into<String>, reason: impl Display) -> Self {
        Self {
            var,
            value: value.into(),
            reason: reason.to_string(),
        }
    }
}

type Lookup<'a> = Box<dyn Fn(&str) -> Option<String> + 'a>;

/// Where variables come from: the process environment, or a lookup function (tests).
pub struct Env<'a> {
    lookup: Lookup<'a>,
}

impl std::fmt::Debug for Env<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Env")
    }
}

impl Env<'static> {
    /// The process environment.
    pub fn process() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }
}

impl<'a> Env<'a> {
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String> + 'a) -> Self {
        Self {
            lookup: Box::new(lookup),
        }
    }

    /// A table of variables (tests).
    pub fn from_pairs(pairs: &'a [(&'a str, &'a str)]) -> Self {
        Self::from_lookup(move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    /// The trimmed value of `name`; `None` when unset or blank.
    pub fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// `name` parsed with [`FromStr`], or `default` when unset.
    pub fn parse<T>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        self.parse_with(name, default, |v| v.parse::<T>().map_err(|e| e.to_string()))
    }

    /// `name` parsed by `parse` (whose error says what was expected), or `default` when unset.
    pub fn parse_with<T>(
        &self,
        name: &'static str,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => parse(&v).map_err(|reason| ConfigError::new(name, v, reason)),
        }
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`, any case).
    pub fn flag(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        self.parse_with(name, default, |v| match v.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err("expected true or false".to_owned()),
        })
    }

    /// A whole number greater than zero.
    pub fn positive<T>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + Default,
    {
        self.parse_with(name, default, |v| match v.parse::<T>() {
            Ok(n) if n > T::default() => Ok(n),
            _ => Err("expected a positive whole number".to_owned()),
        })
    }

    /// A size greater than zero (`16MiB`, `5GB`, `1048576`; see [`parse_size`]).
    pub fn positive_size(&self, name: &'static str, default: u64) -> Result<u64, ConfigError> {
        self.parse_with(name, default, |v| match parse_size(v) {
            Ok(0) => Err("must be greater than zero".to_owned()),
            other => other,
        })
    }

    /// A whole number of milliseconds, at least 1.
    pub fn positive_millis(
        &self,
        name: &'static str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        self.parse_with(name, default, |v| match v.parse::<u64>() {
            Ok(0) => Err("must be at least 1 millisecond".to_owned()),
            Ok(n) => Ok(Duration::from_millis(n)),
            Err(_) => Err("expected a whole number of milliseconds".to_owned()),
        })
    }

    /// A whole number of seconds, at least 1.
    pub fn positive_secs(
        &self,
        name: &'static str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        self.parse_with(name, default, |v| match v.parse::<u64>() {
            Ok(0) => Err("must be at least 1 second".to_owned()),
            Ok(n) => Ok(Duration::from_secs(n)),
            Err(_) => Err("expected a whole number of seconds".to_owned()),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn blank_is_unset_and_values_are_trimmed() {
        let env = Env::from_pairs(&[("A", "  "), ("B", " 7 ")]);
        assert_eq!(env.get("A"), None);
        assert_eq!(env.get("B").as_deref(), Some("7"));
        assert_eq!(env.parse("A", 3_u32), Ok(3));
        assert_eq!(env.parse("B", 3_u32), Ok(7));
        assert_eq!(env.get("MISSING"), None);
    }

    #[test]
    fn errors_name_the_variable_the_value_and_the_expectation() {
        let env = Env::from_pairs(&[
            ("N", "x"),
            ("Z", "0"),
            ("S", "0"),
            ("T", "0"),
            ("F", "maybe"),
        ]);
        let e = env.parse::<u32>("N", 1).unwrap_err();
        assert_eq!(e.var, "N");
        assert_eq!(e.value, "x");
        assert!(e.to_string().starts_with("invalid N=\"x\": "), "{e}");
        assert_eq!(
            env.positive::<u32>("Z", 1).unwrap_err().reason,
            "expected a positive whole number"
        );
        assert_eq!(
            env.positive_size("S", 1).unwrap_err().reason,
            "must be greater than zero"
        );
        assert_eq!(
            env.positive_secs("T", Duration::from_secs(1))
                .unwrap_err()
                .reason,
            "must be at least 1 second"
        );
        assert_eq!(
            env.flag("F", false).unwrap_err().reason,
            "expected true or false"
        );
    }

    #[test]
    fn typed_readers() {
        let env = Env::from_pairs(&[
            ("SIZE", "16MiB"),
            ("SECS", "90"),
            ("ON", "Yes"),
            ("OFF", "0"),
        ]);
        assert_eq!(env.positive_size("SIZE", 1), Ok(16 * 1024 * 1024));
        assert_eq!(
            env.positive_secs("SECS", Duration::from_secs(1)),
            Ok(Duration::from_secs(90))
        );
        assert_eq!(env.flag("ON", false), Ok(true));
        assert_eq!(env.flag("OFF", true), Ok(false));
        assert_eq!(env.flag("UNSET", true), Ok(true));
    }
}
