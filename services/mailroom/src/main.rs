//! `mailroom`: the one binary of Mailroom.
//!
//! - `mailroom serve identity[,…]|all` hosts services and the web console (`web`, HTTP on
//!   8080) — one Deployment each in Kubernetes, or all in one process, the monolithic mode;
//! - `mailroom migrate` applies every service's migrations and exits (the Helm hook Job);
//! - `mailroom dev` runs every built service and the console against local dependencies with
//!   demo data;
//! - `mailroom ctl …` is the admin CLI over the gRPC APIs;
//! - `mailroom keygen` prints a new token-signing key (`--sealing ID`: a secrets-at-rest key);
//! - `mailroom health ENDPOINT…` checks services' gRPC health (the chart's `helm test`);
//! - `mailroom completion bash|zsh|fish|…` prints a shell completion script.

mod ctl;
mod dev;
mod health;
mod malloc;
mod output;
mod serve;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "mailroom",
    version,
    about = "Identities and work mailboxes for large organisations"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve services: a comma-separated list of identity, access, mailboxes, sync,
    /// invitations, web (the console), or `all`.
    Serve {
        #[arg(value_name = "SERVICES")]
        services: String,
        /// What the sync service does in this process: scheduler, worker or both
        /// (default: MAILROOM_SYNC__ROLE, else both).
        #[arg(long, value_name = "ROLE", value_parser = ["scheduler", "worker", "both"])]
        role: Option<String>,
    },
    /// Apply database migrations of the given services (default: all) and exit.
    Migrate {
        #[arg(value_name = "SERVICES", default_value = "all")]
        services: String,
        /// Apply nothing: say whether each schema is one this version can run on (every
        /// migration it needs applied, no contract migration it does not know); fail if not.
        #[arg(long)]
        check: bool,
    },
    /// Run every built service in one process against local dependencies, with demo data.
    Dev,
    /// Admin CLI over the gRPC APIs.
    #[command(after_help = ctl::exit::HELP)]
    Ctl(Box<ctl::Ctl>),
    /// Print a shell completion script for mailroom to stdout, e.g.
    /// `mailroom completion bash > /etc/bash_completion.d/mailroom` or
    /// `source <(mailroom completion zsh)`.
    Completion {
        #[arg(value_enum, value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print a new Ed25519 signing key (base64 seed) for MAILROOM_IDENTITY__SIGNING_KEYS, or
    /// with --sealing ID a key that seals mailbox passwords at rest (`ID:base64`).
    Keygen {
        #[arg(long, value_name = "ID")]
        sealing: Option<String>,
    },
    /// Check that each gRPC endpoint (http://host:port, https:// over TLS) reports SERVING on
    /// its health service.
    Health {
        #[arg(required = true, value_name = "ENDPOINT")]
        endpoints: Vec<String>,
        #[arg(long, default_value_t = 5)]
        timeout_secs: u64,
        #[command(flatten)]
        tls: health::TlsArgs,
    },
}

fn main() -> std::process::ExitCode {
    malloc::return_large_blocks_to_the_system();
    let cli = Cli::parse();
    if let Command::Completion { shell } = cli.command {
        use clap::CommandFactory;
        clap_complete::generate(
            shell,
            &mut Cli::command(),
            "mailroom",
            &mut std::io::stdout(),
        );
        return std::process::ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let is_ctl = matches!(cli.command, Command::Ctl(_));
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve { services, role } => serve::serve(&services, role.as_deref()).await,
            Command::Migrate { services, check } => serve::migrate(&services, check).await,
            Command::Dev => dev::run().await,
            Command::Ctl(ctl) => ctl::run(*ctl).await,
            Command::Health {
                endpoints,
                timeout_secs,
                tls,
            } => {
                health::check(
                    &endpoints,
                    std::time::Duration::from_secs(timeout_secs),
                    &tls,
                )
                .await
            }
            Command::Completion { .. } => Ok(()),
            Command::Keygen { sealing } => {
                match sealing {
                    Some(id) => {
                        println!("{}", mailroom_platform::sealed::SealingKeys::generate(&id))
                    }
                    None => println!("{}", mailroom_identity::keys::KeyRing::generate_seed()),
                }
                Ok(())
            }
        }
    });
    // Whatever is left (tasks told to stop and abandoned, a blocking call such as a Kafka
    // client's close) gets a moment, not the unbounded wait dropping the runtime would give it.
    runtime.shutdown_timeout(mailroom_platform::shutdown::EXIT_MARGIN);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // `ctl`'s statuses ([`ctl::exit`]); any other command's error is 1. A denial was
            // printed as the answer already.
            let status = if is_ctl {
                ctl::exit::status(&err)
            } else {
                ctl::exit::ERROR
            };
            if status != ctl::exit::DENIED {
                eprintln!("error: {err:#}");
            }
            std::process::ExitCode::from(status)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every command's arguments are well formed (clap checks this only when a command is
    /// first parsed in a debug build; a malformed one panicked `ctl users set-admin`).
    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn ctl_help_lists_the_exit_statuses_and_completion_names_the_binary() {
        let mut cli = super::Cli::command();
        let ctl = cli.find_subcommand_mut("ctl").expect("ctl");
        let help = ctl.render_long_help().to_string();
        assert!(
            help.contains("Exit status:") && help.contains("3   denied"),
            "{help}"
        );
        let mut script = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut super::Cli::command(),
            "mailroom",
            &mut script,
        );
        let script = String::from_utf8(script).expect("UTF-8");
        assert!(script.contains("mailroom") && script.contains("use-context"));
    }
}
