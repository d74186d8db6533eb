use clap::Parser;
use gatehouse::cli::{run, Cli};
use gatehouse::telemetry::logs::{self, LogSettings};

#[tokio::main]
async fn main() {
    gatehouse::cli::tune_allocator();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                std::process::exit(
                    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                        2
                    } else {
                        0
                    },
                );
            }
            eprintln!("{}", one_line(&e.render().to_string()));
            std::process::exit(2);
        }
    };
    // The server logs at info and exports traces when configured; admin
    // commands stay quiet so their output (and any error) is what the
    // operator reads.
    let serve = matches!(cli.command, gatehouse::cli::Command::Serve(_));
    let settings = LogSettings {
        default_filter: if serve { "info,sqlx=warn" } else { "error" },
        traces: serve,
    };
    if let Err(e) = logs::init(settings) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    if let Err(e) = run(cli).await {
        eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
        std::process::exit(1);
    }
}

/// One clear line from clap's multi-line message: the error and what it
/// names, without the usage dump.
fn one_line(text: &str) -> String {
    let line = text
        .lines()
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("tip:"))
        .collect::<Vec<_>>()
        .join(" ");
    if line.is_empty() {
        "error: invalid arguments".to_string()
    } else {
        line
    }
}
