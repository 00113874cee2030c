//! One module per subcommand (or family of subcommands).

pub mod completions;
pub mod credentials;
pub mod deploy;
pub mod drift;
pub mod predict;
pub mod snippets;
pub mod status;
pub mod traffic;
pub mod up;
pub mod workers;
