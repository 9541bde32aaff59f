//! `weir replay --recording FILE -c candidate.toml`: re-judges a recorded
//! rollout under another plan and other gates.
//!
//! The recording (`[recording]`, format in `weir_control::recording`) holds
//! what each backend of each route served, second by second, and the
//! rollout's events as they happened. For every route of the candidate
//! config that has a rollout and recorded seconds, this feeds the seconds
//! into the proxy's own telemetry (`BackendStats`, the cuts, the windows)
//! on a simulated clock and ticks a real `Engine` with the candidate's plan
//! every `interval`, from when the recorded rollout started. It prints
//! what the candidate would have decided and when, beside what was decided.
//!
//! The traffic is what was recorded: the canary's share is the recorded
//! rollout's. After the candidate's first decision that differs, its
//! later ones are indicative (a real rollout would have moved the traffic
//! too); the first divergence is exact. `promql` gates are not replayed
//! (no Prometheus then): they read inconclusive.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use weir_control::config::{Config, Route};
use weir_control::gate::GateResult;
use weir_control::recording::{Line, SideSecond};
use weir_control::rollout::{Context, Engine, Event, EventKind, Phase};

use crate::telemetry::{tick_recorded, BackendStats, StageMarks};

/// Exit code for an unreadable recording (sysexits' EX_DATAERR).
pub const EXIT_DATA: u8 = 65;

/// `weir replay`'s arguments.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The recording (`[recording] file`); several are read in order
    /// (e.g. `weir.rec.1 weir.rec` after a rotation).
    #[arg(long, required = true, num_args = 1..)]
    pub recording: Vec<PathBuf>,
    /// The candidate config: its rollout plans and gates are replayed.
    #[arg(short, long, default_value = "weir.toml")]
    pub config: PathBuf,
    /// Only this route.
    #[arg(long)]
    pub route: Option<String>,
    /// One JSON object per route instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// What one route's recording holds.
#[derive(Default)]
struct Recorded {
    seconds: Vec<(u64, Option<SideSecond>, Option<SideSecond>)>,
    events: Vec<Event>,
}

/// One decision, recorded or replayed, at `t_ms` after the rollout began.
#[derive(serde::Serialize)]
struct Decision {
    t_ms: i64,
    kind: EventKind,
    stage: usize,
    weight: f64,
    cause: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    verdicts: Vec<GateResult>,
}

impl Decision {
    fn of(ev: &Event, start_ms: u64) -> Decision {
        Decision {
            t_ms: ev.at_ms as i64 - start_ms as i64,
            kind: ev.kind,
            stage: ev.stage,
            weight: ev.weight,
            cause: ev.cause.clone(),
            verdicts: ev.verdicts.clone(),
        }
    }
}

/// One route's replay.
#[derive(serde::Serialize)]
struct Report {
    route: String,
    /// Engine-clock ms the rollout (and the times below) start from.
    start_ms: u64,
    /// Seconds of traffic replayed.
    seconds: usize,
    recorded: Vec<Decision>,
    candidate: Vec<Decision>,
}

/// Runs `weir replay` with `cfg`, the candidate config read from
/// `args.config`.
pub fn main(args: &ReplayArgs, cfg: &Config) -> ExitCode {
    let mut routes: BTreeMap<String, Recorded> = BTreeMap::new();
    for path in &args.recording {
        if let Err(e) = read(path, &mut routes) {
            eprintln!("weir replay: {e}");
            return ExitCode::from(EXIT_DATA);
        }
    }
    let mut reports = Vec::new();
    for r in cfg.routes.iter().filter(|r| args.route.as_ref().is_none_or(|n| *n == r.name)) {
        let Some(rec) = routes.get_mut(&r.name) else { continue };
        rec.seconds.sort_by_key(|s| s.0);
        rec.events.sort_by_key(|e| e.at_ms);
        match replay(cfg, r, rec) {
            Some(report) => reports.push(report),
            None => eprintln!("weir replay: route {}: no rollout in {}: skipped", r.name, args.config.display()),
        }
    }
    if reports.is_empty() {
        eprintln!(
            "weir replay: no route of {} with a rollout has recorded traffic{}",
            args.config.display(),
            args.route.as_ref().map(|n| format!(" (asked: {n})")).unwrap_or_default()
        );
        return ExitCode::from(EXIT_DATA);
    }
    for rep in &reports {
        if args.json {
            match serde_json::to_string(rep) {
                Ok(s) => println!("{s}"),
                Err(e) => eprintln!("weir replay: {e}"),
            }
        } else {
            print!("{}", table(rep, &args.config));
        }
    }
    ExitCode::SUCCESS
}

/// Seconds after this (year 36812) are not a time a recording holds.
const MAX_SEC: u64 = 1 << 40;
/// More requests than this in one second are not a recording's either
/// (and would overflow [`part`]).
const MAX_COUNT: u64 = 1 << 50;

/// Whether any count of `s` is beyond what a second holds (each checked
/// alone: their sum could wrap).
fn too_many(s: &SideSecond) -> bool {
    let c = &s.counts;
    c.by_class.iter().chain(&c.by_error).chain([&c.failed]).any(|&n| n > MAX_COUNT)
        || c.by_class.iter().try_fold(0u64, |a, &n| a.checked_add(n)).is_none_or(|t| t > MAX_COUNT)
        || s.buckets.iter().any(|&(i, _)| usize::from(i) >= weir_control::sample::bucket::COUNT)
}

/// Reads a recording's lines into `routes`. Lines that are not recording
/// lines (one cut short by a crash, say) are skipped and reported on
/// stderr; a file that cannot be read is an error.
fn read(path: &Path, routes: &mut BTreeMap<String, Recorded>) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (mut bad, mut first_bad) = (0usize, None);
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<Line>(&line).map_err(|e| e.to_string()).and_then(|l| match l {
            Line::Second { sec, .. } if sec > MAX_SEC => Err(format!("second {sec} is out of range")),
            Line::Second { ref stable, ref canary, .. } if [stable, canary].into_iter().flatten().any(too_many) => {
                Err("more requests in a second than a recording holds".into())
            }
            l => Ok(l),
        });
        match parsed {
            Ok(Line::Start { .. }) => {}
            Ok(Line::Second { route, sec, stable, canary }) => {
                routes.entry(route).or_default().seconds.push((sec, stable, canary));
            }
            Ok(Line::Event { event }) => routes.entry(event.route.clone()).or_default().events.push(*event),
            Err(e) => {
                bad += 1;
                first_bad.get_or_insert(format!("line {}: {e}", i + 1));
            }
        }
    }
    if let Some(first) = first_bad {
        eprintln!("weir replay: {}: {bad} line(s) skipped, not recording lines (first: {first})", path.display());
    }
    Ok(())
}

/// Ticks the candidate's engine over `rec` on a simulated clock (`None`:
/// the route has no rollout in the candidate).
fn replay(cfg: &Config, r: &Route, rec: &Recorded) -> Option<Report> {
    let plan = r.rollout.clone()?;
    // The recorded rollout's start (its first `started` event); else the
    // recording's first second.
    let first_ms = rec.seconds.first().map_or(0, |s| s.0 * 1000);
    let end_ms = rec.seconds.last().map_or(0, |s| (s.0 + 1) * 1000);
    let start_ms = rec.events.iter().find(|e| e.kind == EventKind::Started).map_or(first_ms, |e| e.at_ms);
    // The recorded rollout: from that start to the next one, if any.
    let next_start = rec.events.iter().find(|e| e.kind == EventKind::Started && e.at_ms > start_ms).map(|e| e.at_ms);
    let end_ms = next_start.map_or(end_ms, |n| n.min(end_ms));
    let keep = cfg.telemetry.keep_secs();
    let (canary, stable) = (BackendStats::default(), BackendStats::default());
    let ctx = Context::of(cfg, r, weir_control::fingerprint(cfg));
    let mut engine: Option<Engine> = None;
    let mut marks: Option<StageMarks> = None;
    let mut candidate = Vec::new();
    let (mut fed, mut added) = (0, vec![0u64; rec.seconds.len()]);
    // From the history the telemetry keeps before the start (a stable
    // baseline), no earlier.
    let from_ms = first_ms.max(start_ms.saturating_sub(keep * 1000));
    let (mut now, mut next_tick) = (from_ms.min(start_ms / 100 * 100), start_ms);
    while now <= end_ms {
        // Each second arrives over its second, a tenth every 100 ms (the
        // live windows see requests as they come, not a second later).
        for (i, (sec, s, c)) in rec.seconds.iter().enumerate().skip(fed) {
            if sec * 1000 >= now {
                break;
            }
            let tenths = ((now - sec * 1000) / 100).min(10);
            if tenths > added[i] {
                for (stats, side) in [(&stable, s), (&canary, c)] {
                    if let Some(part) = side.as_ref().and_then(|side| part(side, added[i], tenths)) {
                        stats.add_second(*sec, &part.counts, &part.buckets, keep);
                    }
                }
                added[i] = tenths;
            }
            if tenths == 10 && fed == i {
                fed = i + 1;
            }
        }
        if now >= next_tick {
            let e = engine.get_or_insert_with(|| {
                let (e, ev) = Engine::new(plan.clone(), ctx.clone(), now);
                candidate.push(Decision::of(&ev, start_ms));
                e
            });
            next_tick = now + e.plan().interval.as_millis() as u64;
            let tick = tick_recorded(e, &mut marks, &canary, &stable, now, keep);
            candidate.extend(
                tick.events.iter().filter(|ev| ev.kind != EventKind::Evaluated).map(|ev| Decision::of(ev, start_ms)),
            );
            let bake = e.plan().stages.last().map_or(0, |s| s.bake.as_millis() as u64);
            match e.state().phase {
                // Paused (on_failure or on_hold): only a person moves it on.
                Phase::RolledBack | Phase::Aborted | Phase::Paused => break,
                Phase::Promoted if e.window_ms(now) >= bake => break,
                _ => {}
            }
        }
        now += 100;
    }
    let recorded = rec
        .events
        .iter()
        .filter(|e| e.kind != EventKind::Evaluated && e.at_ms >= start_ms && next_start.is_none_or(|n| e.at_ms < n))
        .map(|e| Decision::of(e, start_ms))
        .collect();
    Some(Report { route: r.name.clone(), start_ms, seconds: rec.seconds.len(), recorded, candidate })
}

/// The share of `side` that arrived between tenths `from` and `to` of its
/// second (as if its requests were spread evenly); `None` if none did.
fn part(side: &SideSecond, from: u64, to: u64) -> Option<SideSecond> {
    let share = |n: u64| n * to / 10 - n * from / 10;
    let mut counts = side.counts;
    counts.by_class.iter_mut().for_each(|n| *n = share(*n));
    counts.by_error.iter_mut().for_each(|n| *n = share(*n));
    counts.failed = share(counts.failed);
    let buckets: Vec<(u16, u32)> =
        side.buckets.iter().map(|&(i, n)| (i, share(u64::from(n)) as u32)).filter(|&(_, n)| n > 0).collect();
    (counts.total() > 0 || !buckets.is_empty()).then_some(SideSecond { counts, buckets })
}

/// The report as a table: recorded and candidate decisions side by side,
/// in time order, each candidate decision with its gates.
fn table(rep: &Report, config: &Path) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "route {}: {} s of recorded traffic; times from the rollout's start; candidate: {}",
        rep.route,
        rep.seconds,
        config.display()
    );
    let _ = writeln!(out, "{:>9}  {:<44}  candidate", "t", "recorded");
    let mut rows: Vec<(i64, bool, &Decision)> = rep
        .recorded
        .iter()
        .map(|d| (d.t_ms, false, d))
        .chain(rep.candidate.iter().map(|d| (d.t_ms, true, d)))
        .collect();
    rows.sort_by_key(|r| (r.0, r.1));
    for (t, cand, d) in rows {
        let what = format!("{} ({}%): {}", d.kind.as_str(), d.weight, d.cause);
        let when = format!("{:+.1}s", t as f64 / 1000.0);
        if cand {
            let _ = writeln!(out, "{when:>9}  {:<44}  {what}", "");
            for v in &d.verdicts {
                let value = v.value.map_or("-".to_string(), |x| format!("{x:.4}"));
                let limit = v.threshold.map_or("-".to_string(), |x| format!("{x:.4}"));
                let _ = writeln!(
                    out,
                    "{:>9}  {:<44}    {} = {} (value {value}, limit {limit}, {} canary samples)",
                    "",
                    "",
                    v.gate,
                    v.verdict.as_str(),
                    v.canary_samples
                );
            }
        } else {
            let _ = writeln!(out, "{when:>9}  {what}");
        }
    }
    let end = |ds: &[Decision]| {
        ds.iter()
            .rev()
            .find(|d| {
                matches!(d.kind, EventKind::RolledBack | EventKind::Promoted | EventKind::Aborted | EventKind::Paused)
            })
            .map_or("no decision".to_string(), |d| format!("{} at {:+.1}s", d.kind.as_str(), d.t_ms as f64 / 1000.0))
    };
    let _ = writeln!(out, "recorded: {}; candidate: {}\n", end(&rep.recorded), end(&rep.candidate));
    out
}
