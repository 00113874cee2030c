//! One module per subcommand.

pub mod deploy;
pub mod predict;
pub mod snippets;
pub mod status;
pub mod up;
