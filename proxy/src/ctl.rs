//! `weir ctl`: the admin API from a shell.
//!
//! Exit codes: 0 done; 1 refused (the action is not allowed in the
//! rollout's state, or another error answer); 2 bad usage; 3 no such route;
//! 4 missing, wrong or refused token (401, 403, 429); 5 the admin API cannot be reached; `wait`
//! only: 6 the rollout ended otherwise (rolled back while waiting for a
//! promotion, say), 7 timed out.

use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

/// What `weir ctl` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CtlCommand {
    /// Show routes, weights, rollout states and gate verdicts.
    Status,
    /// Hold a rollout at its current weight.
    Pause,
    /// Continue a paused rollout (a rolled-back or aborted one restarts at stage 0).
    Resume,
    /// Move to the next stage (with --full: straight to 100 %).
    Promote,
    /// Roll back now: canary weight 0.
    Abort,
    /// Fleet mode: the leader, the committed revision and every member.
    Fleet,
    /// Wait until ROUTE's rollout is in the state `--for` names (exit 0),
    /// ends otherwise (exit 6), or `--timeout` passes (exit 7): a CI step
    /// that gates a deploy on the rollout's outcome.
    Wait,
}

/// The outcome `weir ctl wait` waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WaitFor {
    /// The canary took all traffic (and its post-promotion bake passed).
    Promoted,
    /// The canary was rolled back (or aborted).
    RolledBack,
}

/// Options of `weir ctl`.
#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// What to do.
    #[arg(value_enum)]
    pub command: CtlCommand,
    /// The route (required for actions; filters status).
    pub route: Option<String>,
    /// Admin API base URL (`https://` for an admin listener with `admin.tls`).
    #[arg(long, env = "WEIR_ADMIN", default_value = "http://127.0.0.1:9901")]
    pub admin: String,
    /// CA bundle (PEM) trusted, besides the system roots, for an
    /// `https://` admin URL (an admin listener with `admin.tls`).
    #[arg(long, env = "WEIR_ADMIN_CA")]
    pub ca: Option<std::path::PathBuf>,
    /// Bearer token for actions.
    #[arg(long, env = "WEIR_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the bearer token.
    #[arg(long)]
    pub token_file: Option<std::path::PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// With promote: go straight to 100 %.
    #[arg(long)]
    pub full: bool,
    /// With wait: the outcome to wait for.
    #[arg(long = "for", value_enum, default_value = "promoted")]
    pub wait_for: WaitFor,
    /// With status: print the table again every `--interval` until
    /// interrupted (the screen is cleared between tables on a terminal).
    #[arg(long, short = 'w')]
    pub watch: bool,
    /// With status --watch: how often.
    #[arg(long, default_value = "2s", value_parser = weir_control::config::units::parse_duration)]
    pub interval: Duration,
    /// With wait: how long to wait (e.g. `30m`).
    #[arg(long, default_value = "30m", value_parser = weir_control::config::units::parse_duration)]
    pub timeout: Duration,
}

const EXIT_REFUSED: u8 = 1;
const EXIT_NO_ROUTE: u8 = 3;
const EXIT_AUTH: u8 = 4;
const EXIT_UNREACHABLE: u8 = 5;
const EXIT_OTHER_OUTCOME: u8 = 6;
const EXIT_TIMEOUT: u8 = 7;

/// Runs `weir ctl`.
pub fn main(args: CtlArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weir ctl: {e}");
            return ExitCode::from(EXIT_UNREACHABLE);
        }
    };
    rt.block_on(run(args))
}

async fn run(args: CtlArgs) -> ExitCode {
    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => Some(t.trim().to_string()),
        (None, Some(f)) => match crate::files::read_token(f, "--token-file") {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("weir ctl: {e}");
                return ExitCode::from(EXIT_AUTH);
            }
        },
        (None, None) => None,
    };
    let base = args.admin.trim_end_matches('/');
    let client = match admin_client(args.ca.as_deref(), base.starts_with("https://")) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("weir ctl: {e}");
            return ExitCode::from(EXIT_UNREACHABLE);
        }
    };
    let client = &client;
    if args.command == CtlCommand::Wait {
        let Some(route) = &args.route else {
            eprintln!("weir ctl: wait needs a ROUTE");
            return ExitCode::from(2);
        };
        return wait(client, base, route, args.wait_for, args.timeout).await;
    }
    if args.command == CtlCommand::Status && args.watch {
        return watch(client, base, &args).await;
    }
    let (method, url) = match (args.command, &args.route) {
        (CtlCommand::Status, _) => (Method::GET, format!("{base}/api/v1/routes")),
        (CtlCommand::Fleet, _) => (Method::GET, format!("{base}/api/v1/fleet")),
        (_, None) => {
            eprintln!("weir ctl: {:?} needs a ROUTE", args.command);
            return ExitCode::from(2);
        }
        (cmd, Some(route)) => {
            let action = format!("{cmd:?}").to_lowercase();
            let full = if args.full && cmd == CtlCommand::Promote { "?full=true" } else { "" };
            (Method::POST, format!("{base}/api/v1/routes/{route}/{action}{full}"))
        }
    };
    let (status, body) = match request(client, method, &url, token.as_deref()).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("weir ctl: cannot reach the admin API at {base}: {e}");
            return ExitCode::from(EXIT_UNREACHABLE);
        }
    };
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        let msg = json["error"].as_str().map_or_else(|| String::from_utf8_lossy(&body).into_owned(), str::to_string);
        eprintln!("weir ctl: {} ({})", msg, status.as_u16());
        return ExitCode::from(match status {
            StatusCode::UNAUTHORIZED | StatusCode::TOO_MANY_REQUESTS | StatusCode::FORBIDDEN => EXIT_AUTH,
            StatusCode::NOT_FOUND => EXIT_NO_ROUTE,
            _ => EXIT_REFUSED,
        });
    }
    if args.json {
        println!("{json:#}");
        return ExitCode::SUCCESS;
    }
    match args.command {
        CtlCommand::Status => match status_table(&json, args.route.as_deref()) {
            Ok(t) => print!("{t}"),
            Err(code) => return code,
        },
        CtlCommand::Fleet => print!("{}", fleet(&json)),
        _ => {
            let ev = &json["event"];
            println!(
                "{}: {} -> {} (stage {}, weight {}): {}",
                ev["route"].as_str().unwrap_or("?"),
                ev["from"].as_str().unwrap_or("?"),
                ev["to"].as_str().unwrap_or("?"),
                ev["stage"],
                percent(ev["weight"].as_f64().unwrap_or(0.0)),
                ev["cause"].as_str().unwrap_or("")
            );
        }
    }
    ExitCode::SUCCESS
}

/// The status table of `json` (`GET /api/v1/routes`), of one route if
/// `route` names one (exit 3 if there is none).
fn status_table(json: &serde_json::Value, route: Option<&str>) -> Result<String, ExitCode> {
    let routes: Vec<&serde_json::Value> = json["routes"]
        .as_array()
        .map(|a| a.iter().filter(|r| route.is_none_or(|n| r["name"] == n)).collect())
        .unwrap_or_default();
    if let Some(name) = route {
        if routes.is_empty() {
            eprintln!("weir ctl: no route named \"{name}\"");
            return Err(ExitCode::from(EXIT_NO_ROUTE));
        }
    }
    // Each rollout in a sentence, under the table (as the dashboard shows it).
    let said: String = routes
        .iter()
        .filter_map(|r| Some(format!("{}: {}\n", r["name"].as_str()?, r["rollout"]["summary"].as_str()?)))
        .collect();
    Ok(if said.is_empty() { table(&routes) } else { format!("{}\n{said}", table(&routes)) })
}

/// `weir ctl status --watch`: the table every `--interval` (at least
/// 100 ms) until Ctrl-C (exit 0); an admin API that stops answering is said
/// and waited for.
async fn watch(client: &AdminClient, base: &str, args: &CtlArgs) -> ExitCode {
    use std::io::IsTerminal;
    use tokio::signal::unix::{signal, SignalKind};
    // Registered once: a Ctrl-C during a request or a print is not lost.
    let mut interrupt = match signal(SignalKind::interrupt()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("weir ctl: cannot watch for Ctrl-C: {e}");
            return ExitCode::from(EXIT_REFUSED);
        }
    };
    let url = format!("{base}/api/v1/routes");
    let tty = std::io::stdout().is_terminal();
    let interval = args.interval.max(Duration::from_millis(100));
    loop {
        let round = async {
            let shown = match request(client, Method::GET, &url, None).await {
                Ok((status, body)) if status.is_success() => {
                    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    status_table(&json, args.route.as_deref())?
                }
                Ok((status, _)) => format!("admin API at {base}: HTTP {}\n", status.as_u16()),
                Err(e) => format!("cannot reach the admin API at {base}: {e}\n"),
            };
            let now = httpdate::fmt_http_date(std::time::SystemTime::now());
            // On a terminal, one screen redrawn in place; piped, one table
            // after the other.
            let clear = if tty { "\x1b[H\x1b[2J" } else { "" };
            print!("{clear}every {interval:?}: {base} at {now}\n{shown}\n");
            let _ = std::io::Write::flush(&mut std::io::stdout());
            tokio::time::sleep(interval).await;
            Ok(())
        };
        tokio::select! {
            done = round => if let Err(code) = done { return code },
            _ = interrupt.recv() => return ExitCode::SUCCESS,
        }
    }
}

/// `weir ctl wait`: polls the route's rollout once a second, printing each
/// change of state or stage, until it is `want` (0), ends otherwise (6) or
/// `timeout` passes (7). An admin API that does not answer for a while (a
/// restart) is waited for too.
async fn wait(client: &AdminClient, base: &str, route: &str, want: WaitFor, timeout: Duration) -> ExitCode {
    let deadline = tokio::time::Instant::now() + timeout;
    let url = format!("{base}/api/v1/routes");
    let mut last = String::new();
    loop {
        match request(client, Method::GET, &url, None).await {
            Ok((status, body)) if status.is_success() => {
                let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let Some(r) = json["routes"].as_array().and_then(|a| a.iter().find(|r| r["name"] == route)) else {
                    eprintln!("weir ctl: no route named \"{route}\"");
                    return ExitCode::from(EXIT_NO_ROUTE);
                };
                let ro = &r["rollout"];
                if ro.is_null() {
                    eprintln!("weir ctl: route \"{route}\" has no rollout");
                    return ExitCode::from(EXIT_NO_ROUTE);
                }
                let state = ro["state"].as_str().unwrap_or("?");
                // A promotion counts once its post-promotion bake is over
                // (a failure during it still rolls back).
                let baking = state == "promoted" && ro["judging"].as_bool() == Some(true);
                let shown = if baking { "promoted (baking)" } else { state };
                let now = format!("{shown} stage {} at {}", ro["stage"], percent(r["weight"].as_f64().unwrap_or(0.0)));
                if now != last {
                    println!("{route}: {now}");
                    last = now;
                }
                match (want, state) {
                    (_, "promoted") if baking => {}
                    (WaitFor::Promoted, "promoted") | (WaitFor::RolledBack, "rolled_back" | "aborted") => {
                        return ExitCode::SUCCESS;
                    }
                    (WaitFor::Promoted, "rolled_back" | "aborted") | (WaitFor::RolledBack, "promoted") => {
                        eprintln!("weir ctl: route \"{route}\" ended {state}, not {want:?}");
                        return ExitCode::from(EXIT_OTHER_OUTCOME);
                    }
                    _ => {}
                }
            }
            Ok((status, _)) => eprintln!("weir ctl: the admin API answered {}; waiting", status.as_u16()),
            Err(e) => eprintln!("weir ctl: cannot reach the admin API at {base} ({e}); waiting"),
        }
        if tokio::time::Instant::now() + Duration::from_secs(1) > deadline {
            eprintln!("weir ctl: route \"{route}\" not {want:?} after {timeout:?}");
            return ExitCode::from(EXIT_TIMEOUT);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The admin API's client: HTTP, or HTTPS verified against the system roots
/// and `--ca`.
type AdminClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

fn admin_client(ca: Option<&std::path::Path>, https: bool) -> Result<AdminClient, String> {
    let tls = crate::tls::client_with_extra_roots(ca, None, "--ca", https)?;
    Ok(crate::tls::https_client(tls, Duration::from_secs(10)))
}

async fn request(
    client: &AdminClient,
    method: Method,
    url: &str,
    token: Option<&str>,
) -> Result<(StatusCode, Bytes), String> {
    let mut req = Request::builder().method(method).uri(url);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req.body(Full::new(Bytes::new())).map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .map_err(|_| "no answer within 10 s".to_string())?
        .map_err(|e| crate::log::error_chain(&e))?;
    let status = resp.status();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, body))
}

/// `10%`, `12.5%`, `0.01%`.
fn percent(x: f64) -> String {
    let s = format!("{x:.2}");
    format!("{}%", s.trim_end_matches('0').trim_end_matches('.'))
}

/// `weir ctl fleet`: a line on this replica and the leader, then the members.
fn fleet(v: &serde_json::Value) -> String {
    let leader = &v["leader"];
    let mut out = format!(
        "fleet {}: replica {} ({}), leader {} (term {}), applied revision {}\n",
        v["fleet"].as_str().unwrap_or("?"),
        v["id"].as_str().unwrap_or("?"),
        v["role"].as_str().unwrap_or("?"),
        leader["id"].as_str().unwrap_or("none"),
        leader["term"].as_i64().map_or("-".to_string(), |t| t.to_string()),
        v["applied_revision"].as_i64().unwrap_or(0),
    );
    if let Some(o) = v["overrides"].as_object().filter(|o| !o.is_empty()) {
        for (route, why) in o {
            out.push_str(&format!("this replica serves stable on {route}: {}\n", why.as_str().unwrap_or("?")));
        }
    }
    let mut rows = vec![["MEMBER", "CONFIG", "REVISION", "REPORTED", "OVERRIDES"].map(String::from).to_vec()];
    for m in v["members"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let id = m["id"].as_str().unwrap_or("?");
        let lead = if leader["id"].as_str() == Some(id) { " *" } else { "" };
        let overrides = m["overrides"].as_object().map_or(0, |o| o.len());
        rows.push(vec![
            format!("{id}{lead}"),
            m["config_hash"].as_str().unwrap_or("?").chars().take(12).collect(),
            m["applied_revision"].as_i64().unwrap_or(0).to_string(),
            format!("{:.1}s ago", m["report_age_ms"].as_u64().unwrap_or(0) as f64 / 1000.0),
            if overrides == 0 { "-".to_string() } else { overrides.to_string() },
        ]);
    }
    out.push_str(&columns(rows));
    out
}

/// Rows as left-aligned columns two spaces apart.
fn columns(rows: Vec<Vec<String>>) -> String {
    let n = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..n).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// A rollout's age, to the unit that matters: `45s`, `12m`, `3h04m`, `2d05h`.
fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// The status table.
fn table(routes: &[&serde_json::Value]) -> String {
    let mut rows =
        vec![["ROUTE", "STATE", "STAGE", "AGE", "WEIGHT", "STABLE", "CANARY", "GATES"].map(String::from).to_vec()];
    for r in routes {
        let backend = |b: &serde_json::Value| {
            if b.is_null() {
                "-".to_string()
            } else {
                let commit = b["release"]["commit"].as_str().map(|c| format!("@{}", c.get(..12).unwrap_or(c)));
                format!(
                    "{} {}{}",
                    b["backend"].as_str().unwrap_or("?"),
                    b["version"].as_str().unwrap_or(""),
                    commit.unwrap_or_default()
                )
                .trim()
                .to_string()
            }
        };
        let ro = &r["rollout"];
        let age = ro["age_ms"].as_u64().map_or("-".to_string(), age);
        let (state, stage, gates) = if ro.is_null() {
            ("static".to_string(), "-".to_string(), "-".to_string())
        } else {
            let stages = ro["stages"].as_array().map_or(0, Vec::len);
            let gates: Vec<String> = ro["verdicts"]
                .as_array()
                .map(|v| {
                    v.iter()
                        .map(|g| {
                            let dry = if g["dry_run"].as_bool() == Some(true) { " (dry run)" } else { "" };
                            format!(
                                "{}={}{dry}",
                                g["gate"].as_str().unwrap_or("?"),
                                g["verdict"].as_str().unwrap_or("?")
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            (
                ro["state"].as_str().unwrap_or("?").to_string(),
                format!("{}/{}", ro["stage"].as_u64().unwrap_or(0) + 1, stages),
                if gates.is_empty() { "-".to_string() } else { gates.join(" ") },
            )
        };
        rows.push(vec![
            r["name"].as_str().unwrap_or("?").to_string(),
            state,
            stage,
            age,
            percent(r["weight"].as_f64().unwrap_or(0.0)),
            backend(&r["stable"]),
            backend(&r["canary"]),
            gates,
        ]);
    }
    columns(rows)
}
