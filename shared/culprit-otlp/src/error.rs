use crate::Encoding;
use culprit_core::SourceKind;

/// Why a payload produced no events. Every variant that concerns content names where in the
/// payload the problem is, so a dead-lettered message can be fixed without a debugger.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty payload")]
    Empty,

    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },

    /// The bytes are not valid JSON / protobuf, or a JSON value has the wrong type. `path` is the
    /// JSON path (`resourceLogs[0].scopeLogs[0].logRecords[2].timeUnixNano`); empty when unknown,
    /// as for protobuf, whose decoder does not track paths.
    #[error("malformed {encoding} {signal} payload{}: {reason}", at_path(.path))]
    Malformed {
        signal: SourceKind,
        encoding: Encoding,
        path: String,
        reason: String,
    },

    /// Well-formed, but a record breaks the model: wrong id length, end before start, missing
    /// required field. `record` is a path such as `resourceSpans[0].scopeSpans[1].spans[3]`.
    #[error("{record}: field `{field}`: {reason}")]
    Invalid {
        record: String,
        field: String,
        reason: String,
    },
}

fn at_path(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!(" at `{path}`")
    }
}

impl DecodeError {
    /// A stable, low-cardinality code for metrics and the dead-letter queue.
    pub fn reason_code(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty",
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::Malformed {
                encoding: Encoding::Json,
                ..
            } => "malformed_json",
            DecodeError::Malformed {
                encoding: Encoding::Protobuf,
                ..
            } => "malformed_protobuf",
            DecodeError::Invalid { .. } => "invalid_field",
        }
    }

    pub(crate) fn invalid(
        record: impl Into<String>,
        field: &str,
        reason: impl Into<String>,
    ) -> DecodeError {
        DecodeError::Invalid {
            record: record.into(),
            field: field.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn malformed_json(
        signal: SourceKind,
        path: impl Into<String>,
        reason: impl Into<String>,
    ) -> DecodeError {
        DecodeError::Malformed {
            signal,
            encoding: Encoding::Json,
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn from_path_error(
        signal: SourceKind,
        err: serde_path_to_error::Error<serde_json::Error>,
    ) -> DecodeError {
        let path = err.path().to_string();
        // serde_path_to_error renders the root as "."; an empty path reads better in our message.
        let path = if path == "." { String::new() } else { path };
        DecodeError::malformed_json(signal, path, err.into_inner().to_string())
    }
}
