//! `summary.csv`: one row per level, flat columns (distribution stats as `ttft_s_p99` etc.), for
//! spreadsheets and plotting scripts. `input_tokens_from` says where input counts came from
//! (`usage`, `tokenizer`, `usage+tokenizer`, or empty when unknown); `output_tokens_counted` is how many requests'
//! output tokens were counted from chunks because the server sent no usage.

use std::io::Write;

use crate::summary::{Dist, LevelStats, PERCENTILES};

type DistOf = fn(&LevelStats) -> &Dist;

pub fn write_csv<W: Write>(levels: &[LevelStats], w: W) -> Result<(), csv::Error> {
    let mut out = csv::Writer::from_writer(w);
    let dists: [(&str, DistOf); 6] = [
        ("ttft_s", |l| &l.ttft_s),
        ("tpot_s", |l| &l.tpot_s),
        ("itl_s", |l| &l.itl_s),
        ("latency_s", |l| &l.latency_s),
        ("ntpot_s", |l| &l.ntpot_s),
        ("schedule_lag_s", |l| &l.schedule_lag_s),
    ];
    let stats: Vec<&str> = ["mean", "std", "min"]
        .into_iter()
        .chain(PERCENTILES.iter().map(|p| p.0))
        .chain(["max"])
        .collect();
    let mut header: Vec<String> = [
        "parallel",
        "rate",
        "planned",
        "requests",
        "succeeded",
        "failed",
        "not_sent",
        "duration_s",
        "qps",
        "output_throughput",
        "total_throughput",
        "achieved_concurrency",
        "input_tokens_mean",
        "input_tokens_from",
        "output_tokens_mean",
        "output_tokens_counted",
        "goodput_qps",
        "failures",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (name, _) in &dists {
        header.extend(stats.iter().map(|s| format!("{name}_{s}")));
    }
    header.extend(["loadgen_cpu_s", "loadgen_cores", "loadgen_allowed_share"].map(String::from));
    out.write_record(&header)?;
    for l in levels {
        let failures: Vec<String> = l.failures.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut row = vec![
            l.parallel.to_string(),
            l.rate.map_or_else(String::new, |r| r.to_string()),
            l.planned.to_string(),
            l.requests.to_string(),
            l.succeeded.to_string(),
            l.failed.to_string(),
            l.not_sent.to_string(),
            l.duration_s.to_string(),
            l.qps.to_string(),
            l.output_throughput.to_string(),
            l.total_throughput.to_string(),
            l.achieved_concurrency.to_string(),
            l.input_tokens_mean.to_string(),
            l.input_tokens_from.clone().unwrap_or_default(),
            l.output_tokens_mean.to_string(),
            l.tokens_counted.to_string(),
            l.goodput.as_ref().map_or_else(String::new, |g| g.goodput_qps.to_string()),
            failures.join(";"),
        ];
        for (_, get) in &dists {
            let d = get(l);
            row.extend(stats.iter().map(|s| d.get(s).unwrap_or(0.0).to_string()));
        }
        let cpu = l.loadgen_cpu.as_ref();
        row.extend([
            cpu.map_or_else(String::new, |c| c.cpu_s.to_string()),
            cpu.map_or_else(String::new, |c| c.cores.to_string()),
            cpu.map_or_else(String::new, |c| c.allowed_share.to_string()),
        ]);
        out.write_record(&row)?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_level_with_matching_columns() {
        let mut l = LevelStats { parallel: 8, requests: 3, ..Default::default() };
        l.failures.insert("http_500".into(), 2);
        l.ttft_s.p99 = 0.25;
        let mut out = Vec::new();
        write_csv(&[l.clone(), l], &mut out).unwrap();
        let mut r = csv::Reader::from_reader(out.as_slice());
        let h = r.headers().unwrap().clone();
        let rows: Vec<_> = r.records().map(|x| x.unwrap()).collect();
        assert_eq!(rows.len(), 2);
        let col = |name: &str| h.iter().position(|x| x == name).unwrap();
        assert_eq!(&rows[0][col("ttft_s_p99")], "0.25");
        assert_eq!(&rows[0][col("failures")], "http_500=2");
        assert_eq!(rows[0].len(), h.len());
        assert_eq!(&rows[0][col("loadgen_cores")], "", "no figure: an empty cell");
    }

    #[test]
    fn the_load_generators_cpu_use_has_its_columns() {
        let l = LevelStats {
            parallel: 4,
            loadgen_cpu: Some(crate::summary::LoadgenCpu {
                cpu_s: 0.5,
                wall_s: 2.0,
                cores: 0.25,
                allowed_share: 0.125,
                allowed_cpus: 2,
            }),
            ..Default::default()
        };
        let mut out = Vec::new();
        write_csv(&[l], &mut out).unwrap();
        let mut r = csv::Reader::from_reader(out.as_slice());
        let h = r.headers().unwrap().clone();
        let row = r.records().next().unwrap().unwrap();
        let col = |name: &str| h.iter().position(|x| x == name).unwrap();
        assert_eq!(
            (
                &row[col("loadgen_cpu_s")],
                &row[col("loadgen_cores")],
                &row[col("loadgen_allowed_share")]
            ),
            ("0.5", "0.25", "0.125")
        );
    }
}
