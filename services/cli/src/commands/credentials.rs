//! `kiln certs dev` and `kiln token new`.

use kiln_security::{Role, devcerts, tokens};

use crate::args::{CertsCommand, RoleArg, TokenCommand};
use crate::output::emit;

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
