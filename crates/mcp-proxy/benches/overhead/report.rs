//! The overhead bench's tables: every row with its CPU time, then the issue's
//! targets as ratios to the nginx row of the same run, each met or not.

use crate::Row;

/// The row of `target` at `clients`, if it ran.
fn find<'a>(rows: &'a [Row], target: &str, clients: usize) -> Option<&'a Row> {
    rows.iter()
        .find(|row| row.clients == clients && row.target == target)
}

/// p50, p99, calls/s, what each adds over direct and CPU per 1,000 calls.
pub fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| clients | target        | calls | p50 ms | p99 ms | calls/s | added p50 ms | added p99 ms | CPU ms / 1k calls |"
    );
    println!(
        "|--------:|---------------|------:|-------:|-------:|--------:|-------------:|-------------:|------------------:|"
    );
    for row in rows {
        let (added_p50, added_p99) = match find(rows, "direct", row.clients) {
            Some(direct) if row.target != "direct" => (
                format!("{:+.3}", row.percentile(0.5) - direct.percentile(0.5)),
                format!("{:+.3}", row.percentile(0.99) - direct.percentile(0.99)),
            ),
            _ => ("-".to_owned(), "-".to_owned()),
        };
        let cpu = row.cpu_per_thousand();
        let cpu = if cpu.is_nan() {
            "-".to_owned()
        } else {
            format!("{cpu:.0}")
        };
        println!(
            "| {:>7} | {:<13} | {:>5} | {:>6.3} | {:>6.3} | {:>7.0} | {:>12} | {:>12} | {:>17} |",
            row.clients,
            row.target,
            row.calls,
            row.percentile(0.5),
            row.percentile(0.99),
            row.ops_per_second(),
            added_p50,
            added_p99,
            cpu
        );
    }
    println!();
    println!("Store operations per call and their mean latency, as the proxy timed them:");
    for row in rows.iter().filter(|row| !row.store.is_empty()) {
        let operations: Vec<String> = row
            .store
            .iter()
            .map(|(operation, (count, seconds))| {
                format!(
                    "{operation} {:.2}/call {:.3} ms",
                    *count as f64 / row.calls as f64,
                    seconds * 1000.0 / *count as f64
                )
            })
            .collect();
        println!(
            "  {} x{}: {}",
            row.target,
            row.clients,
            operations.join(", ")
        );
    }
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT met"
    }
}

/// The proxy targets against nginx in this run (skipped without nginx).
pub fn print_targets(rows: &[Row]) {
    let mut levels: Vec<usize> = rows.iter().map(|row| row.clients).collect();
    levels.dedup();
    println!();
    println!("Targets (ratios to nginx within this run):");
    for clients in levels {
        let (Some(direct), Some(nginx)) =
            (find(rows, "direct", clients), find(rows, "nginx", clients))
        else {
            println!("  x{clients}: no direct or nginx row, targets not measured");
            continue;
        };
        let nginx_added = nginx.percentile(0.5) - direct.percentile(0.5);
        for (target, p50_margin, throughput_floor, cpu_ceiling) in [
            ("proxy, memory", 0.15, 0.9, Some(2.0)),
            ("proxy, Redis", 0.35, 0.8, None),
        ] {
            let Some(row) = find(rows, target, clients) else {
                continue;
            };
            let added = row.percentile(0.5) - direct.percentile(0.5);
            let throughput = row.ops_per_second() / nginx.ops_per_second();
            let cpu = row.cpu_per_thousand() / nginx.cpu_per_thousand();
            let mut parts = vec![format!(
                "added p50 {added:+.3} ms vs nginx {nginx_added:+.3} ms (+{:.3}, limit +{p50_margin}){}",
                added - nginx_added,
                if clients == 1 {
                    format!(": {}", verdict(added <= nginx_added + p50_margin))
                } else {
                    String::new()
                }
            )];
            parts.push(format!(
                "calls/s {throughput:.2}x nginx (floor {throughput_floor}x){}",
                if clients == 16 {
                    format!(": {}", verdict(throughput >= throughput_floor))
                } else {
                    String::new()
                }
            ));
            parts.push(match cpu_ceiling {
                Some(ceiling) => format!(
                    "CPU per call {cpu:.2}x nginx (ceiling {ceiling}x): {}",
                    verdict(cpu <= ceiling)
                ),
                None => format!("CPU per call {cpu:.2}x nginx"),
            });
            println!("  {target} x{clients}: {}", parts.join("; "));
        }
    }
}
