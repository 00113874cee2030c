//! `kiln completions SHELL`: the shell completion script of the whole command tree, on stdout.

use clap::CommandFactory;

use crate::args::{Cli, CompletionsArgs};
use crate::output::emit;

/// The completion script for `args.shell`.
pub fn script(args: &CompletionsArgs) -> String {
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "kiln", &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs `kiln completions`.
pub fn run(args: CompletionsArgs) -> anyhow::Result<()> {
    emit(&script(&args))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shell_gets_a_script_naming_kiln() {
        use clap::ValueEnum;
        for shell in clap_complete::Shell::value_variants() {
            let s = script(&CompletionsArgs { shell: *shell });
            assert!(s.contains("kiln"), "{shell:?}");
            assert!(s.contains("promote"), "{shell:?} lacks subcommands");
        }
    }
}
