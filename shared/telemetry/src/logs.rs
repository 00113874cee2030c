//! The process's log output and Triton's logging extension: the `LogSettings` RPC reads and
//! changes what a running service logs, without a restart.
//!
//! [`init`] installs one `tracing` subscriber writing to stdout ([`init_to_stderr`]: stderr),
//! filtered by `RUST_LOG` (default `info`, the *base* filter) and by the settings, which start
//! as Triton's defaults:
//!
//! | setting | type | meaning |
//! |---|---|---|
//! | `log_info`, `log_warning`, `log_error` | bool | whether events of that level are written |
//! | `log_verbose_level` | uint32 | 0: the base filter; 1: Kiln's own `debug` events too; 2 and up: Kiln's `trace` and every crate's `debug`, instead of the base filter |
//! | `log_file` | string | always `""` (the process's output; a process manager collects it): another value is refused |
//! | `log_format` | string | always `"default"`: another value is refused |
//!
//! A key sent without a value goes back to its default.
//!
//! At level 1 a `RUST_LOG` directive naming a crate still wins for that crate (the most
//! specific directive applies). [`update`] checks every setting of a request before it applies any of them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use kiln_proto::inference::log_settings_request::SettingValue;
use kiln_proto::inference::log_settings_request::setting_value::ParameterChoice as Choice;
use kiln_proto::inference::log_settings_response::SettingValue as Answer;
use kiln_proto::inference::log_settings_response::setting_value::ParameterChoice as AnswerChoice;
use kiln_proto::inference::{LogSettingsRequest, LogSettingsResponse};
use tracing::Level;
use tracing_subscriber::filter::{EnvFilter, FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry, fmt, reload};

/// The log settings of this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Write `INFO` events.
    pub info: bool,
    /// Write `WARN` events.
    pub warning: bool,
    /// Write `ERROR` events.
    pub error: bool,
    /// 0: the base filter; 1: Kiln's `debug` events too; 2+: Kiln's `trace`, everyone's `debug`.
    pub verbose_level: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            info: true,
            warning: true,
            error: true,
            verbose_level: 0,
        }
    }
}

/// A setting a request could not apply (the caller answers INVALID_ARGUMENT).
#[derive(Debug, thiserror::Error)]
#[error("log setting {key:?}: {why}")]
pub struct SettingError {
    key: String,
    why: String,
}

static INFO: AtomicBool = AtomicBool::new(true);
static WARNING: AtomicBool = AtomicBool::new(true);
static ERROR: AtomicBool = AtomicBool::new(true);

struct Control {
    /// The installed subscriber's filter (absent when another subscriber was installed first).
    filter: Option<reload::Handle<EnvFilter, Registry>>,
    /// `RUST_LOG`, or `info`.
    base: String,
    settings: Mutex<Settings>,
}

static CONTROL: OnceLock<Control> = OnceLock::new();

fn control() -> &'static Control {
    CONTROL.get_or_init(|| Control {
        filter: None,
        base: base_filter(),
        settings: Mutex::new(Settings::default()),
    })
}

/// `RUST_LOG` if it parses, else `info`.
fn base_filter() -> String {
    std::env::var(EnvFilter::DEFAULT_ENV)
        .ok()
        .filter(|v| EnvFilter::try_new(v).is_ok())
        .unwrap_or_else(|| "info".to_owned())
}

/// The filter directives for `verbose_level` over `base`.
fn directives(base: &str, verbose_level: u32) -> String {
    match verbose_level {
        0 => base.to_owned(),
        1 => format!("{base},kiln=debug"),
        _ => "debug,kiln=trace".to_owned(),
    }
}

/// Whether the level switches let an event of `level` through.
fn level_on(level: &Level) -> bool {
    match *level {
        Level::INFO => INFO.load(Ordering::Relaxed),
        Level::WARN => WARNING.load(Ordering::Relaxed),
        Level::ERROR => ERROR.load(Ordering::Relaxed),
        _ => true,
    }
}

/// Installs the global subscriber, writing to standard output (idempotent: later calls, and
/// calls after another subscriber was installed, change nothing).
pub fn init() {
    init_with(std::io::stdout);
}

/// [`init`], writing to standard error: for commands whose standard output is their answer
/// (the `kiln` CLI's `--output json`).
pub fn init_to_stderr() {
    init_with(std::io::stderr);
}

fn init_with<W>(writer: W)
where
    W: for<'w> fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let base = base_filter();
    let (filter, handle) = reload::Layer::new(EnvFilter::new(&base));
    let switches = filter_fn(|meta| level_on(meta.level()));
    let layer = fmt::layer()
        .with_target(false)
        .with_writer(writer)
        .with_filter(filter.and(switches));
    if tracing_subscriber::registry()
        .with(layer)
        .try_init()
        .is_ok()
    {
        let _ = CONTROL.set(Control {
            filter: Some(handle),
            base,
            settings: Mutex::new(Settings::default()),
        });
    }
}

/// The settings now.
pub fn settings() -> Settings {
    *control().settings.lock().unwrap_or_else(|p| p.into_inner())
}

/// Applies `new`: swaps the filter and the level switches.
fn apply(control: &Control, new: Settings) -> Result<(), SettingError> {
    if let Some(handle) = &control.filter {
        let filter =
            EnvFilter::try_new(directives(&control.base, new.verbose_level)).map_err(|e| {
                SettingError {
                    key: "log_verbose_level".into(),
                    why: e.to_string(),
                }
            })?;
        handle.reload(filter).map_err(|e| SettingError {
            key: "log_verbose_level".into(),
            why: e.to_string(),
        })?;
    }
    INFO.store(new.info, Ordering::Relaxed);
    WARNING.store(new.warning, Ordering::Relaxed);
    ERROR.store(new.error, Ordering::Relaxed);
    // Callsites cache whether they are enabled: ask them again.
    tracing::callsite::rebuild_interest_cache();
    Ok(())
}

fn bool_of(key: &str, value: &SettingValue) -> Result<bool, SettingError> {
    match value.parameter_choice {
        Some(Choice::BoolParam(b)) => Ok(b),
        _ => Err(SettingError {
            key: key.into(),
            why: "takes a bool".into(),
        }),
    }
}

/// The settings `changes` asks for over `current`, every key checked.
fn merged(
    mut current: Settings,
    changes: &HashMap<String, SettingValue>,
) -> Result<Settings, SettingError> {
    let defaults = Settings::default();
    for (key, value) in changes {
        // A key without a value goes back to its default.
        if value.parameter_choice.is_none() {
            match key.as_str() {
                "log_info" => current.info = defaults.info,
                "log_warning" => current.warning = defaults.warning,
                "log_error" => current.error = defaults.error,
                "log_verbose_level" => current.verbose_level = defaults.verbose_level,
                _ => {}
            }
            continue;
        }
        match key.as_str() {
            "log_info" => current.info = bool_of(key, value)?,
            "log_warning" => current.warning = bool_of(key, value)?,
            "log_error" => current.error = bool_of(key, value)?,
            "log_verbose_level" => match value.parameter_choice {
                Some(Choice::Uint32Param(n)) => current.verbose_level = n,
                _ => {
                    return Err(SettingError {
                        key: key.clone(),
                        why: "takes a uint32".into(),
                    });
                }
            },
            "log_file" | "log_format" => {
                let fixed = if key == "log_file" { "" } else { "default" };
                match &value.parameter_choice {
                    Some(Choice::StringParam(s)) if s == fixed => {}
                    _ => {
                        return Err(SettingError {
                            key: key.clone(),
                            why: format!(
                                "Kiln writes its logs to the process's output in one format: only {fixed:?} is accepted"
                            ),
                        });
                    }
                }
            }
            _ => {
                return Err(SettingError {
                    key: key.clone(),
                    why: "unknown (known: log_info, log_warning, log_error, log_verbose_level, log_file, log_format)".into(),
                });
            }
        }
    }
    Ok(current)
}

/// Serves one `LogSettings` call: applies the request's changes (none: a read) and answers
/// with every setting.
pub fn update(request: &LogSettingsRequest) -> Result<LogSettingsResponse, SettingError> {
    let control = control();
    let mut settings = control.settings.lock().unwrap_or_else(|p| p.into_inner());
    let new = merged(*settings, &request.settings)?;
    if new != *settings {
        apply(control, new)?;
        *settings = new;
    }
    Ok(response(*settings))
}

fn response(s: Settings) -> LogSettingsResponse {
    let value = |choice| Answer {
        parameter_choice: Some(choice),
    };
    let settings = [
        ("log_file", value(AnswerChoice::StringParam(String::new()))),
        ("log_info", value(AnswerChoice::BoolParam(s.info))),
        ("log_warning", value(AnswerChoice::BoolParam(s.warning))),
        ("log_error", value(AnswerChoice::BoolParam(s.error))),
        (
            "log_verbose_level",
            value(AnswerChoice::Uint32Param(s.verbose_level)),
        ),
        (
            "log_format",
            value(AnswerChoice::StringParam("default".into())),
        ),
    ];
    LogSettingsResponse {
        settings: settings
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, Choice)]) -> HashMap<String, SettingValue> {
        pairs
            .iter()
            .map(|(k, c)| {
                (
                    (*k).to_owned(),
                    SettingValue {
                        parameter_choice: Some(c.clone()),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn changes_apply_over_the_current_settings() {
        let new = merged(
            Settings::default(),
            &set(&[
                ("log_info", Choice::BoolParam(false)),
                ("log_verbose_level", Choice::Uint32Param(2)),
                ("log_file", Choice::StringParam(String::new())),
            ]),
        )
        .unwrap();
        assert_eq!(
            new,
            Settings {
                info: false,
                verbose_level: 2,
                ..Settings::default()
            }
        );
    }

    #[test]
    fn a_key_without_a_value_goes_back_to_its_default() {
        let quiet = Settings {
            info: false,
            verbose_level: 3,
            ..Settings::default()
        };
        let changes = ["log_info", "log_verbose_level", "log_file"]
            .into_iter()
            .map(|k| (k.to_owned(), SettingValue::default()))
            .collect();
        assert_eq!(merged(quiet, &changes).unwrap(), Settings::default());
    }

    #[test]
    fn wrong_types_unknown_keys_and_other_files_are_refused_by_name() {
        let refused = |pairs: &[(&str, Choice)]| {
            merged(Settings::default(), &set(pairs))
                .unwrap_err()
                .to_string()
        };
        assert!(refused(&[("log_info", Choice::Uint32Param(1))]).contains("takes a bool"));
        assert!(
            refused(&[("log_verbose_level", Choice::BoolParam(true))]).contains("takes a uint32")
        );
        assert!(refused(&[("log_colour", Choice::BoolParam(true))]).contains("unknown"));
        assert!(
            refused(&[("log_file", Choice::StringParam("/tmp/x".into()))])
                .contains("the process's output")
        );
        assert!(
            refused(&[("log_format", Choice::StringParam("ISO8601".into()))])
                .contains("\"default\"")
        );
    }

    #[test]
    fn verbose_levels_widen_the_base_filter() {
        for level in 0..4 {
            EnvFilter::try_new(directives("info,h2=warn", level)).unwrap();
        }
        assert_eq!(directives("info,h2=warn", 0), "info,h2=warn");
        assert_eq!(directives("info,h2=warn", 1), "info,h2=warn,kiln=debug");
        assert_eq!(directives("info,h2=warn", 2), "debug,kiln=trace");
    }

    #[test]
    fn the_level_switches_follow_the_settings_and_the_answer_lists_every_setting() {
        let off = LogSettingsRequest {
            settings: set(&[("log_warning", Choice::BoolParam(false))]),
        };
        let answer = update(&off).unwrap();
        assert!(!level_on(&Level::WARN) && level_on(&Level::ERROR));
        assert_eq!(answer.settings.len(), 6);
        assert_eq!(
            answer.settings["log_warning"].parameter_choice,
            Some(AnswerChoice::BoolParam(false))
        );
        let on = LogSettingsRequest {
            settings: set(&[("log_warning", Choice::BoolParam(true))]),
        };
        update(&on).unwrap();
        assert!(level_on(&Level::WARN));
        assert_eq!(settings(), Settings::default());
    }
}
