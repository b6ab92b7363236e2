//! The lab benchmarks: real pigeon processes on a simulated LAN.
//!
//! This is a `harness = false` bench target, so it can use the
//! dev-dependencies (plotters, the testkit) and `CARGO_BIN_EXE_pigeon`. It
//! is a small tool on the testkit's harness (`testkit::lab::Lab` for the
//! labs, `SlipsTree` for Slips' layout and argv, `testkit::slips` for
//! Slips' bytes and the checker of what Slips accepts), one module per job:
//!
//! * the **orchestrator** (`latency`, `fanout`, `converge`, `idle` with
//!   `rss`, `all`, `summary`, `plot`), run as root in the root network
//!   namespace. It opens no socket there: it creates labs with
//!   `testkit::lab::Lab::up` (which runs `scripts/lab.sh up`), starts every
//!   process from a thread inside the lab host, reads files and `/proc`,
//!   and removes its labs on drop (also on error);
//! * the **workers** (`w-*`, `workers.rs`), started by the orchestrator
//!   inside lab hosts: Slips stand-ins talking to the host's own Redis, and
//!   the UDP relays of the latency floor. A worker refuses to run in the
//!   root network namespace, so no socket of this program can ever reach a
//!   real interface.
//!
//! Run it through `scripts/bench.sh`, or `cargo bench --bench lab -- all`.
//! Plain `cargo bench` (no command) only prints how to run it. Results go to
//! `target/bench-lab/*.json`, plots to `docs/plots/`; `docs/BENCHMARKS.md`
//! explains the method and the figures.

mod args;
mod common;
mod converge;
mod fanout;
mod idle;
mod latency;
mod plot;
mod summary;
mod workers;

use anyhow::{Result, bail};
use args::Args;
use common::save;
use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo bench --bench lab -- COMMAND [OPTIONS]    (as root; see scripts/bench.sh)

commands (orchestrator; each creates and removes its own lab with scripts/lab.sh):
  latency  [--count 300] [--pace-directed-ms 110] [--pace-broadcast-ms 110]
           Slips publish on host A -> go_data on host B, next to a floor
           (Redis hop + UDP datagram + Redis hop)
  fanout   [--n 10,25,50] [--requests 100] [--gap-ms 500] [--answers-per-s 40]
           one request to N responders, time until all N answers are back
           (requests at least N / answers-per-s apart: the asker's budget)
  converge [--n 10,25,50,100]
           N pigeons started together, time until every pigeon has proven
           all others, and until every Slips knows all (bounded by the
           peer_update budget: 20 at once, then 2/s)
  idle     [--peers 1000] [--idle-s 60] [--warmup-s 60] [--count-s 300] [--idle-hosts 5]
           RSS and CPU of an idle pigeon that knows 1000 peers; datagrams per
           minute of idle pigeons (nft counters on the lab bridge)
  all      every benchmark above (idle runs alongside the others); takes
           their options, with --fan-n and --conv-n for the two lists of N
  summary  print Markdown tables of target/bench-lab/*.json and the criterion
           estimates of `cargo bench --bench pure`
  plot     redraw docs/plots/*.png from target/bench-lab/*.json

options: --out DIR (results; default target/bench-lab), --plots DIR (default
docs/plots), --keep (keep the work dirs under /tmp/pigeon-bench).";

fn main() -> ExitCode {
    // cargo bench appends --bench; it means nothing here.
    let argv: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if argv.is_empty() {
        println!(
            "lab benchmarks: not run by plain `cargo bench` (they need root and minutes); \
             run scripts/bench.sh or `cargo bench --bench lab -- help`"
        );
        return ExitCode::SUCCESS;
    }
    match run(&argv) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lab-bench: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(argv: &[String]) -> Result<()> {
    let args = Args::parse(argv)?;
    match args.cmd.as_str() {
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            Ok(())
        }
        "latency" => save(&args, "latency", &latency::run(&args)?),
        "fanout" => save(&args, "fanout", &fanout::run(&args)?),
        "converge" => save(&args, "converge", &converge::run(&args)?),
        "idle" => {
            let run = idle::IdleRun::start(&args)?;
            let rss = idle::rss(&args)?;
            save(&args, "rss", &rss)?;
            save(&args, "idle", &run.finish()?)
        }
        "all" => {
            // Idle pigeons only count datagrams: they run on their own lab
            // alongside the others, which costs them nothing measurable.
            let idle = idle::IdleRun::start(&args)?;
            save(&args, "rss", &idle::rss(&args)?)?;
            save(&args, "latency", &latency::run(&args)?)?;
            save(&args, "fanout", &fanout::run(&args)?)?;
            save(&args, "converge", &converge::run(&args)?)?;
            save(&args, "idle", &idle.finish()?)?;
            if let Err(e) = plot::run(&args) {
                eprintln!("lab-bench: no plots: {e:#}");
            }
            summary::run(&args)
        }
        "summary" => summary::run(&args),
        "plot" => plot::run(&args),
        "w-lat-send" => workers::run(workers::lat_send, &args),
        "w-lat-recv" => workers::run(workers::lat_recv, &args),
        "w-floor-a" => workers::run(workers::floor_a, &args),
        "w-floor-b" => workers::run(workers::floor_b, &args),
        "w-respond" => workers::run(workers::respond, &args),
        "w-request" => workers::run(workers::request, &args),
        "w-watch" => workers::run(workers::watch, &args),
        "w-launch" => workers::run(workers::launch, &args),
        other => bail!("unknown command '{other}'\n{USAGE}"),
    }
}
