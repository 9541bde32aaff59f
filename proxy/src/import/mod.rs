//! `weir import`: a weir config from another proxy's configuration.
//! Today: ingress-nginx's canary Ingresses ([`ingress_nginx`]).
//!
//! The config goes to stdout (or `--output`), what could not be carried
//! over to stderr and into the config's header comment. The generated text
//! is checked with weir's own config parser before it is written.

mod ingress_nginx;
mod kube;

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::replay::EXIT_DATA;

/// Exit code when the config could not be written (sysexits' EX_CANTCREAT).
const EXIT_CANTCREAT: u8 = 73;

/// `weir import …`
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// What to import.
    #[command(subcommand)]
    pub from: ImportFrom,
}

/// The sources `weir import` reads.
#[derive(Debug, Subcommand)]
pub enum ImportFrom {
    /// Kubernetes Ingresses with ingress-nginx's canary annotations
    /// (`nginx.ingress.kubernetes.io/canary*`): each main Ingress path is a
    /// route, its canary Ingress's Service the route's canary.
    IngressNginx(IngressNginxArgs),
}

/// `weir import ingress-nginx`
#[derive(Debug, Args)]
pub struct IngressNginxArgs {
    /// YAML files (`-` for stdin): Ingresses, and the Services whose ports
    /// they name by name; other kinds are skipped. `kubectl get ingress,service
    /// -A -o yaml` output is read as is.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Write the config here instead of stdout.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// The namespace of manifests that name none.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Only Ingresses of this class (and those that name none, which
    /// ingress-nginx serves with --watch-ingress-without-class).
    #[arg(long, default_value = "nginx")]
    pub ingress_class: String,
    /// The cluster's DNS domain: Services become
    /// `NAME.NAMESPACE.svc.DOMAIN:PORT`.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Addresses for a Service instead of its DNS name:
    /// `NAME=HOST:PORT[,HOST:PORT…]` or `NAMESPACE/NAME=…` (repeatable).
    #[arg(long = "service", value_name = "NAME=ADDRS")]
    pub services: Vec<String>,
    /// Fail (exit 1, nothing written) when a request would be routed
    /// differently from ingress-nginx or a setting is not imported (a
    /// `differs:` line); `note:` lines do not count.
    #[arg(long)]
    pub strict: bool,
}

/// Runs `weir import`. Exit codes: 0 written; 1 `--strict` and something
/// was not imported exactly; 2 bad usage; 65 unreadable or unusable input;
/// 73 the config could not be written.
pub fn main(args: ImportArgs) -> ExitCode {
    match args.from {
        ImportFrom::IngressNginx(a) => ingress_nginx_main(a),
    }
}

fn ingress_nginx_main(a: IngressNginxArgs) -> ExitCode {
    let mut services = BTreeMap::new();
    for s in &a.services {
        let Some((name, addrs)) = s.split_once('=') else {
            eprintln!("weir import: --service {s}: expected NAME=HOST:PORT[,HOST:PORT...]");
            return ExitCode::from(2);
        };
        let addrs: Vec<String> = addrs.split(',').map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect();
        if name.is_empty() || addrs.is_empty() {
            eprintln!("weir import: --service {s}: expected NAME=HOST:PORT[,HOST:PORT...]");
            return ExitCode::from(2);
        }
        services.insert(name.to_string(), addrs);
    }
    let mut manifests = kube::Manifests::default();
    for f in &a.files {
        let (origin, text) = if f.as_os_str() == "-" {
            let mut text = String::new();
            match std::io::stdin().read_to_string(&mut text) {
                Ok(_) => ("stdin".to_string(), text),
                Err(e) => {
                    eprintln!("weir import: stdin: {e}");
                    return ExitCode::from(EXIT_DATA);
                }
            }
        } else {
            match std::fs::read_to_string(f) {
                Ok(text) => (f.display().to_string(), text),
                Err(e) => {
                    eprintln!("weir import: {}: {e}", f.display());
                    return ExitCode::from(EXIT_DATA);
                }
            }
        };
        if let Err(e) = manifests.read(&origin, &text, &a.namespace) {
            eprintln!("weir import: {e}");
            return ExitCode::from(EXIT_DATA);
        }
    }
    let opts = ingress_nginx::Options { class: a.ingress_class, cluster_domain: a.cluster_domain, services };
    let import = match ingress_nginx::import(&manifests, &opts) {
        Ok(i) => i,
        Err(failed) => {
            // The notes first: they often say why nothing could be imported
            // (every Ingress skipped for its class, say).
            print_notes(&failed.notes);
            for e in failed.errors {
                eprintln!("weir import: {e}");
            }
            return ExitCode::from(EXIT_DATA);
        }
    };
    print_notes(&import.notes);
    let lost = import.notes.iter().filter(|n| n.lost).count();
    if a.strict && lost > 0 {
        eprintln!("weir import: {lost} thing(s) not imported exactly (--strict): nothing written");
        return ExitCode::from(1);
    }
    let written = match &a.output {
        Some(path) => std::fs::write(path, &import.text),
        None => std::io::Write::write_all(&mut std::io::stdout(), import.text.as_bytes()),
    };
    if let Err(e) = written {
        eprintln!("weir import: writing the config: {e}");
        return ExitCode::from(EXIT_CANTCREAT);
    }
    ExitCode::SUCCESS
}

/// Each note on one line of stderr: `differs:` (routed differently, or not
/// imported) or `note:`.
fn print_notes(notes: &[ingress_nginx::Note]) {
    for n in notes {
        eprintln!("{}: {}", if n.lost { "differs" } else { "note" }, n.text);
    }
}
