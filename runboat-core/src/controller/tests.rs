//! mockall interaction tests of the job and command handlers.
