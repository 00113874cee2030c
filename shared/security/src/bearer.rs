//! The client side of tokens: the `--token` flags and the interceptor that sends one.

use std::path::PathBuf;
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;

use crate::args::DEFAULT_RELOAD_SECS;
use crate::token_reload::Tokens;
use crate::tokens::{Secret, TokenBook, TokenFileError};

/// Adds `authorization: Bearer <token>` to every call (nothing without a token).
#[derive(Clone, Default, PartialEq)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Bearer(<redacted>)"
        } else {
            "Bearer(none)"
        })
    }
}

impl Bearer {
    /// An interceptor sending `token`; a token that cannot be a header value is refused.
    pub fn new(token: Option<&Secret>) -> anyhow::Result<Self> {
        let value = token
            .map(|t| {
                let mut v: MetadataValue<Ascii> = format!("Bearer {}", t.expose())
                    .parse()
                    .map_err(|_| anyhow::anyhow!("the token holds characters a header cannot"))?;
                v.set_sensitive(true);
                Ok::<_, anyhow::Error>(v)
            })
            .transpose()?;
        Ok(Self(value))
    }
}

impl Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

/// The token book a server accepts: `--tokens-file`, or inline `KILN_TOKENS`.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct TokenArgs {
    /// File of accepted bearer tokens, one `<client> <infer|admin> sha256:<hex>` per line
    /// (`kiln token new` prints them). Without it (and without KILN_TOKENS), no token is asked.
    #[arg(long = "tokens-file", env = "KILN_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// The same entries inline, `;`-separated (for a Secret mounted as an environment
    /// variable).
    #[arg(
        long = "tokens",
        env = "KILN_TOKENS",
        hide_env_values = true,
        conflicts_with = "tokens_file"
    )]
    pub tokens: Option<Secret>,
    /// How often the token file is checked for changes, in seconds (0: read at start only).
    /// A changed file replaces the accepted tokens; one that does not parse is ignored, with
    /// a warning, until it does.
    #[arg(long = "tokens-reload-secs", env = "KILN_TOKENS_RELOAD_SECS", default_value_t = DEFAULT_RELOAD_SECS)]
    pub tokens_reload_secs: u64,
}

impl TokenArgs {
    /// The accepted tokens, or `None` when tokens are off. A token file is followed every
    /// `--tokens-reload-secs` on the current tokio runtime.
    pub fn start(&self) -> Result<Option<Tokens>, TokenFileError> {
        match (&self.tokens_file, &self.tokens) {
            (Some(path), _) => {
                let every = Duration::from_secs(self.tokens_reload_secs);
                Tokens::follow(path.clone(), every).map(Some)
            }
            (None, Some(inline)) => {
                TokenBook::parse(inline.expose()).map(|b| Some(Tokens::fixed(b)))
            }
            (None, None) => Ok(None),
        }
    }
}

impl Default for TokenArgs {
    fn default() -> Self {
        Self {
            tokens_file: None,
            tokens: None,
            tokens_reload_secs: DEFAULT_RELOAD_SECS,
        }
    }
}
