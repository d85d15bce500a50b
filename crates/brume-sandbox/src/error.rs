//! The one error type every execution and load can end in.

use std::time::Duration;

use crate::Usage;

/// Why a module could not be loaded or an execution did not complete.
///
/// Every variant has a stable machine-readable [`code`](ExecError::code); the
/// `Display` text is for humans and may change. A guest that exits with a
/// non-zero status is *not* an error: that is a [`CommandOutcome`](crate::CommandOutcome)
/// with a non-zero `exit_code`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    /// Not wasm, fails validation, or matches no supported workload shape.
    #[error("invalid module: {0}")]
    InvalidModule(String),
    /// The module imports something outside WASI preview 1/2 and `wasi:http`.
    #[error("import not allowed: {0}")]
    ImportNotAllowed(String),
    /// The guest trapped (unreachable, stack overflow, out-of-bounds access, ...).
    #[error("guest trapped: {0}")]
    Trap(String),
    /// The instruction budget ran out.
    #[error("instruction budget of {budget} exhausted")]
    OutOfFuel { budget: u64 },
    /// Linear memory (or a table) would grow past the cap, or the module
    /// declares more than the sandbox ever grants.
    #[error("memory limit: {0}")]
    MemoryLimit(String),
    /// The wall-clock deadline passed.
    #[error("deadline of {} ms exceeded", .0.as_millis())]
    Timeout(Duration),
    /// stdin or the request body is larger than the input cap.
    #[error("input of {size} bytes exceeds the limit of {limit} bytes")]
    InputTooLarge { size: u64, limit: u64 },
    /// stdout + stderr (or the response body) grew past the output cap.
    #[error("output exceeds the limit of {limit} bytes")]
    OutputTooLarge { limit: u64 },
    /// The caller asked for something the sandbox cannot set up (a missing
    /// preopened directory, an HTTP request to a command module, ...).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A fault in the host, not in the guest. Always a bug or an
    /// environment problem (disk full, cache unwritable).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ExecError {
    /// Every code, for documentation and exhaustive tests.
    pub const CODES: &'static [&'static str] = &[
        "invalid_module",
        "import_not_allowed",
        "trap",
        "out_of_fuel",
        "memory_limit",
        "timeout",
        "input_too_large",
        "output_too_large",
        "invalid_request",
        "internal",
    ];

    /// The stable, machine-readable code for this error.
    pub fn code(&self) -> &'static str {
        match self {
            ExecError::InvalidModule(_) => "invalid_module",
            ExecError::ImportNotAllowed(_) => "import_not_allowed",
            ExecError::Trap(_) => "trap",
            ExecError::OutOfFuel { .. } => "out_of_fuel",
            ExecError::MemoryLimit(_) => "memory_limit",
            ExecError::Timeout(_) => "timeout",
            ExecError::InputTooLarge { .. } => "input_too_large",
            ExecError::OutputTooLarge { .. } => "output_too_large",
            ExecError::InvalidRequest(_) => "invalid_request",
            ExecError::Internal(_) => "internal",
        }
    }

    /// True when the guest ran and then failed (as opposed to never starting).
    pub fn is_guest_fault(&self) -> bool {
        matches!(
            self,
            ExecError::Trap(_)
                | ExecError::OutOfFuel { .. }
                | ExecError::MemoryLimit(_)
                | ExecError::Timeout(_)
                | ExecError::OutputTooLarge { .. }
        )
    }
}

/// An execution that started but did not complete.
///
/// It still carries what the guest consumed and what it wrote before it
/// failed: the meter ran, and a panic message on stderr is often the most
/// useful thing a developer gets.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{error}")]
pub struct ExecFailure {
    pub error: ExecError,
    pub usage: Usage,
    pub stdout: bytes::Bytes,
    pub stderr: bytes::Bytes,
}

impl ExecFailure {
    pub(crate) fn before_start(error: ExecError) -> Self {
        ExecFailure {
            error,
            usage: Usage::default(),
            stdout: bytes::Bytes::new(),
            stderr: bytes::Bytes::new(),
        }
    }
}

impl From<ExecError> for ExecFailure {
    fn from(error: ExecError) -> Self {
        ExecFailure::before_start(error)
    }
}
