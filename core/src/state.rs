//! The upload state machine.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadState {
    Uploading,
    Assembling,
    Completed,
    Failed,
    Cancelled,
    Expired,
}

impl UploadState {
    pub const ALL: [UploadState; 6] = [
        Self::Uploading,
        Self::Assembling,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
        Self::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Uploading => "uploading",
            Self::Assembling => "assembling",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether the state machine allows `self → next`.
    pub fn can_transition_to(self, next: Self) -> bool {
        use UploadState::{Assembling, Cancelled, Completed, Expired, Failed, Uploading};
        matches!(
            (self, next),
            (Uploading, Assembling | Cancelled | Expired | Failed)
                | (Assembling, Completed | Failed)
        )
    }

    /// Unfinished uploads are listed for resume.
    pub fn is_unfinished(self) -> bool {
        matches!(self, Self::Uploading | Self::Assembling)
    }

    /// Cancelled and expired uploads answer `410 Gone` to chunk writes.
    pub fn is_gone(self) -> bool {
        matches!(self, Self::Cancelled | Self::Expired)
    }
}

impl std::fmt::Display for UploadState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::UploadState::*;
    use super::*;

    #[test]
    fn transitions() {
        assert!(Uploading.can_transition_to(Assembling));
        assert!(Uploading.can_transition_to(Cancelled));
        assert!(Uploading.can_transition_to(Expired));
        assert!(Assembling.can_transition_to(Completed));
        assert!(Assembling.can_transition_to(Failed));
        assert!(!Assembling.can_transition_to(Cancelled));
        assert!(!Completed.can_transition_to(Uploading));
        assert!(!Cancelled.can_transition_to(Assembling));
        for s in UploadState::ALL {
            assert!(!s.can_transition_to(s), "{s} must not loop");
            assert_eq!(UploadState::parse(s.as_str()), Some(s));
        }
    }
}
