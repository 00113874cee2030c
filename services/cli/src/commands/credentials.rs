//! `kiln certs dev` and `kiln token new`.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use kiln_security::{Role, devcerts, tokens};

use crate::output::emit;

/// `kiln certs`.
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// A development CA and a certificate per process (not for production: see
    /// docs/SECURITY.md). Reuses the CA already in DIR, so running it again rotates the leaves.
    Dev(CertsDevArgs),
}

/// `kiln certs dev`.
#[derive(Debug, Clone, Args)]
pub struct CertsDevArgs {
    /// Directory to write `ca.pem`, `ca.key` and `<name>.pem`/`<name>.key` into.
    #[arg(long, default_value = "kiln-certs")]
    pub out: PathBuf,
    /// Names to issue certificates for (one per process kind, plus clients).
    #[arg(long = "name", default_values_t = ["gateway".to_string(), "worker".into(), "monitor".into(), "client".into(), "etcd".into()])]
    pub names: Vec<String>,
    /// Extra DNS names or IP addresses every certificate is valid for.
    #[arg(long = "san")]
    pub sans: Vec<String>,
}

/// `kiln token`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a fresh random token and the line to add to a `--tokens-file`.
    New(TokenNewArgs),
}

/// Token roles on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// Inference and metadata.
    Infer,
    /// Also changes the cluster (repository load/unload, kiln.v1.Admin).
    Admin,
}

/// `kiln token new`.
#[derive(Debug, Clone, Args)]
pub struct TokenNewArgs {
    /// The client's name (shown in PERMISSION_DENIED messages and per-client limits).
    #[arg(long)]
    pub client: String,
    /// What the token may do.
    #[arg(long, value_enum, default_value_t = RoleArg::Infer)]
    pub role: RoleArg,
}

/// `kiln certs dev`: writes the CA and certificates, then prints how to use them.
pub fn certs(command: CertsCommand) -> anyhow::Result<()> {
    let CertsCommand::Dev(args) = command;
    let names: Vec<&str> = args.names.iter().map(String::as_str).collect();
    let written = devcerts::write(&args.out, &names, &args.sans)?;
    let dir = written.dir.display();
    let mut text = format!(
        "{} CA in {dir}/ca.pem; certificates (server and client use) for: {}\n",
        if written.new_ca { "new" } else { "reused" },
        written.leaves.join(", ")
    );
    text.push_str(&format!(
        "run a service with:  --tls-cert {dir}/NAME.pem --tls-key {dir}/NAME.key --tls-ca {dir}/ca.pem\n\
         call it with:        kiln --tls-ca {dir}/ca.pem --tls-cert {dir}/client.pem --tls-key {dir}/client.key ...\n"
    ));
    emit(&text)
}

/// `kiln token new`: a fresh token on stdout's first line, its token-file line on the second.
pub fn token(command: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::New(args) = command;
    let role = match args.role {
        RoleArg::Infer => Role::Infer,
        RoleArg::Admin => Role::Admin,
    };
    let (token, line) = tokens::new_token(&args.client, role);
    emit(&format!("{token}\n{line}\n"))
}
