//! The command line: a command, its arguments, the datastore's own options
//! (`--dir`, `--persist`, `--json`), and the options every `ipc` example
//! takes (`--addr`, `--key-file`, TLS), parsed by [`ipc_examples::Args`].

use std::path::PathBuf;

use ipc_core::Address;
use ipc_examples::{Args, ArgsError};

pub(crate) const USAGE: &str = "\
usage: datastore COMMAND [OPTIONS] [ARGS]

commands:
  serve [--dir PATH]                 serve the datastore until Ctrl-C or SIGTERM
                                     (data in $XDG_DATA_HOME/ipc-datastore or
                                     ~/.local/share/ipc-datastore by default)
  set AUTHOR NAME VALUE [--persist] [--json]
                                     set a value (a string, or JSON with --json);
                                     --persist keeps it on disk; prints its version
  get AUTHOR NAME                    print a value as it was given
  delete AUTHOR NAME                 delete a value
  list [AUTHOR]                      the names each author has set
  watch AUTHOR [NAME]                print every change as it happens, until Ctrl-C
  save [AUTHOR]                      save a copy of the values on disk
  restore [AUTHOR]                   set the saved values again
  delete-saved [AUTHOR]              forget the saved copies
  persist AUTHOR NAME                keep a value on disk from now on
  unpersist AUTHOR NAME              keep a value in memory only
  clear-all                          delete every value

options of every command:
  --addr ADDR      HOST:PORT, tls://HOST:PORT or unix:PATH (default localhost:9100)
  --key-file PATH  shared authentication key
  --cert PATH --key PATH [--client-ca PATH]   TLS (serve)
  --ca PATH [--cert PATH --key PATH]          TLS (clients)
  --               ends the options (for a value starting with `-`)";

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    Serve {
        dir: Option<PathBuf>,
    },
    Set {
        author: String,
        name: String,
        value: String,
        persist: bool,
        json: bool,
    },
    Get {
        author: String,
        name: String,
    },
    Delete {
        author: String,
        name: String,
    },
    List {
        author: Option<String>,
    },
    Watch {
        author: String,
        name: Option<String>,
    },
    Save {
        author: Option<String>,
    },
    Restore {
        author: Option<String>,
    },
    DeleteSaved {
        author: Option<String>,
    },
    Persist {
        author: String,
        name: String,
        on: bool,
    },
    ClearAll,
}

/// A parsed command line.
#[derive(Debug)]
pub(crate) struct Cli {
    pub(crate) command: Command,
    /// Address and security options.
    pub(crate) args: Args,
}

/// The datastore's own options, taken out before the rest goes to
/// [`Args::parse`].
#[derive(Debug, Default)]
struct Own {
    dir: Option<String>,
    persist: bool,
    json: bool,
    addr_given: bool,
}

fn take_own(args: Vec<String>) -> Result<(Own, Vec<String>), ArgsError> {
    let mut own = Own::default();
    let mut rest = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--" => {
                rest.push(arg);
                rest.extend(args.by_ref());
                break;
            }
            "--persist" => own.persist = true,
            "--json" => own.json = true,
            "--dir" => {
                let dir = args
                    .next()
                    .ok_or_else(|| ArgsError::Invalid("`--dir` needs a value".into()))?;
                set_dir(&mut own, dir)?;
            }
            _ if arg.starts_with("--dir=") => {
                let dir = arg["--dir=".len()..].to_owned();
                set_dir(&mut own, dir)?;
            }
            _ => {
                if arg == "--addr" || arg.starts_with("--addr=") {
                    own.addr_given = true;
                }
                rest.push(arg);
            }
        }
    }
    Ok((own, rest))
}

fn set_dir(own: &mut Own, dir: String) -> Result<(), ArgsError> {
    if own.dir.replace(dir).is_some() {
        return Err(ArgsError::Invalid("`--dir` given twice".into()));
    }
    Ok(())
}

impl Cli {
    /// Parses the arguments after the program name.
    pub(crate) fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, ArgsError> {
        let mut args: Vec<String> = args.into_iter().collect();
        if args.is_empty() {
            return Err(ArgsError::Invalid("no command".into()));
        }
        let command = args.remove(0);
        if command == "-h" || command == "--help" || command == "help" {
            return Err(ArgsError::Help);
        }
        let (own, rest) = take_own(args)?;
        let mut parsed = Args::parse(rest)?;
        if !own.addr_given {
            parsed.addr = Address::from(ipc_datastore::DEFAULT_ADDR);
        }
        let mut words = std::mem::take(&mut parsed.rest).into_iter();
        let mut word = || words.next();
        let command = match command.as_str() {
            "serve" => Command::Serve {
                dir: own.dir.clone().map(PathBuf::from),
            },
            "set" => match (word(), word(), word()) {
                (Some(author), Some(name), Some(value)) => Command::Set {
                    author,
                    name,
                    value,
                    persist: own.persist,
                    json: own.json,
                },
                _ => return Err(invalid("`set` needs AUTHOR NAME VALUE")),
            },
            "get" | "delete" | "persist" | "unpersist" => {
                let (Some(author), Some(name)) = (word(), word()) else {
                    return Err(invalid(&format!("`{command}` needs AUTHOR NAME")));
                };
                match command.as_str() {
                    "get" => Command::Get { author, name },
                    "delete" => Command::Delete { author, name },
                    other => Command::Persist {
                        author,
                        name,
                        on: other == "persist",
                    },
                }
            }
            "list" => Command::List { author: word() },
            "watch" => match word() {
                Some(author) => Command::Watch {
                    author,
                    name: word(),
                },
                None => return Err(invalid("`watch` needs AUTHOR")),
            },
            "save" => Command::Save { author: word() },
            "restore" => Command::Restore { author: word() },
            "delete-saved" => Command::DeleteSaved { author: word() },
            "clear-all" => Command::ClearAll,
            other => return Err(invalid(&format!("unknown command `{other}`"))),
        };
        if let Some(extra) = word() {
            return Err(invalid(&format!("unexpected argument `{extra}`")));
        }
        let set = matches!(command, Command::Set { .. });
        if (own.persist || own.json) && !set {
            return Err(invalid("`--persist` and `--json` go with `set`"));
        }
        if own.dir.is_some() && !matches!(command, Command::Serve { .. }) {
            return Err(invalid("`--dir` goes with `serve`"));
        }
        Ok(Self {
            command,
            args: parsed,
        })
    }
}

fn invalid(why: &str) -> ArgsError {
    ArgsError::Invalid(why.to_owned())
}

/// Where `serve` keeps its data without `--dir`: `$XDG_DATA_HOME/ipc-datastore`,
/// else `$HOME/.local/share/ipc-datastore`.
pub(crate) fn default_dir() -> Option<PathBuf> {
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").and_then(absolute) {
        return Some(data.join("ipc-datastore"));
    }
    std::env::var_os("HOME")
        .and_then(absolute)
        .map(|home| home.join(".local/share/ipc-datastore"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, ArgsError> {
        Cli::parse(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn set_takes_its_flags_anywhere_and_a_dashed_value_after_double_dash() {
        let cli = parse(&["set", "--json", "a", "n", "--persist", "--", "-5"]).unwrap();
        assert_eq!(
            cli.command,
            Command::Set {
                author: "a".into(),
                name: "n".into(),
                value: "-5".into(),
                persist: true,
                json: true,
            }
        );
        assert_eq!(cli.args.addr, Address::from("localhost:9100"));
    }

    #[test]
    fn the_address_defaults_to_9100_and_can_be_given() {
        let cli = parse(&["serve", "--addr", "127.0.0.1:7", "--dir=/tmp/x"]).unwrap();
        assert_eq!(cli.args.addr, Address::from("127.0.0.1:7"));
        assert_eq!(
            cli.command,
            Command::Serve {
                dir: Some("/tmp/x".into())
            }
        );
        let cli = parse(&["watch", "a"]).unwrap();
        assert_eq!(cli.args.addr, Address::from("localhost:9100"));
        assert_eq!(
            cli.command,
            Command::Watch {
                author: "a".into(),
                name: None
            }
        );
    }

    #[test]
    fn wrong_usage_is_refused() {
        for args in [
            &[][..],
            &["frobnicate"][..],
            &["set", "a", "n"][..],
            &["get", "a"][..],
            &["get", "a", "n", "extra"][..],
            &["get", "a", "n", "--persist"][..],
            &["list", "--dir", "/tmp"][..],
            &["serve", "--dir"][..],
            &["serve", "--verbose"][..],
        ] {
            assert!(
                matches!(parse(args), Err(ArgsError::Invalid(_))),
                "{args:?}"
            );
        }
        assert!(matches!(parse(&["--help"]), Err(ArgsError::Help)));
        assert!(matches!(parse(&["get", "-h"]), Err(ArgsError::Help)));
    }
}
