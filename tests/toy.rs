//! The experiment shape, proved on a third "section": a toy of a few dozen lines (fit y = 2x by
//! gradient descent, swept over the learning rate) implements `Experiment` with its required
//! items only, and runs through the run command, a sweep, `--resume`, `--shard` and `merge`
//! with no line of the harness written for it.
use d2l_regularization::device::DeviceChoice;
use d2l_regularization::experiment::{self, Context, EpochRow, Experiment, Recorder, Run, Stat};
use d2l_regularization::options::Impl;
use d2l_regularization::sweep::{self, Shard, SweepArgs};
use d2l_regularization::{progress, record};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tch::{Device, Kind, Tensor};

// ------------------------------------------------------------------- the toy section

struct Toy;

#[derive(clap::Args, Debug, Clone, Serialize, Deserialize)]
struct Config {
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    #[arg(long, value_delimiter = ',', default_value = "0.1")]
    lr: Vec<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
struct Setting {
    lr: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
struct Row {
    epoch: usize,
    loss: f64,
}

impl EpochRow for Row {
    fn finite(&self) -> bool {
        self.loss.is_finite()
    }
    fn figures(&self) -> String {
        format!("loss {:.4}", self.loss)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Finals {
    final_loss: f64,
    w: f64,
}

impl experiment::FinalFigures for Finals {
    fn gap(&self) -> f64 {
        f64::NAN
    }
}

/// Held while a run seeds libtorch's generator and draws its data.
static DRAWING: Mutex<()> = Mutex::new(());

/// Every run the toy trained: its results directory and seed (to see what `--resume` retrains).
static TRAINED: Mutex<Vec<(PathBuf, i64)>> = Mutex::new(Vec::new());

impl Experiment for Toy {
    const NAME: &'static str = "toy";
    type Config = Config;
    type Setting = Setting;
    type Data = ();
    type Row = Row;
    type Finals = Finals;
    type Artifacts = ();

    fn settings(cfg: &Config) -> Vec<Setting> {
        cfg.lr.iter().map(|&lr| Setting { lr }).collect()
    }
    fn impls(_: &Config) -> Vec<Impl> {
        vec![Impl::Scratch]
    }
    fn unfinished(_: &Config) -> Finals {
        Finals {
            final_loss: f64::NAN,
            w: f64::NAN,
        }
    }
    fn sweep_stats(_: &Config) -> Vec<(&'static str, Stat<Finals>)> {
        vec![("loss", |f| f.final_loss), ("w", |f| f.w)]
    }
    fn prepare(_: &Config, _: &Context) -> anyhow::Result<()> {
        Ok(())
    }
    fn train(
        cfg: &Config,
        _: &(),
        v: Impl,
        settings: &[Setting],
        ctx: &Context,
    ) -> anyhow::Result<Vec<Run<Toy>>> {
        let mut runs = Vec::new();
        for &s in settings {
            TRAINED.lock().unwrap().push((ctx.out.clone(), ctx.seed));
            // libtorch's generator is one per process and the tests of this file run in
            // parallel threads: seed and draw without another thread drawing in between.
            let (x, y) = {
                let _only_us = DRAWING.lock().unwrap_or_else(|e| e.into_inner());
                tch::manual_seed(ctx.seed);
                let x = Tensor::randn([64], (Kind::Double, Device::Cpu));
                let y = &x * 2.0 + Tensor::randn([64], (Kind::Double, Device::Cpu)) * 0.1;
                (x, y)
            };
            let progress = progress::Epochs::new(Self::label(v, s), cfg.epochs);
            let mut recorder = Recorder::new(&progress);
            let mut w = 0.0;
            for epoch in 1..=cfg.epochs {
                let r = &x * w - &y;
                w -= s.lr * (&r * &x * 2.0).mean(None).double_value(&[]);
                let loss = (&x * w - &y).square().mean(None).double_value(&[]);
                if recorder.add(epoch, Row { epoch, loss }).is_break() {
                    break;
                }
            }
            let (curve, status) = recorder.finish();
            let final_loss = curve.last().map_or(f64::NAN, |r| r.loss);
            let finals = Finals { final_loss, w };
            runs.push(Run {
                curve,
                status,
                finals,
                seconds: 0.0,
                artifacts: (),
            });
        }
        Ok(runs)
    }
    fn curve_chart<'a>(title: &'a str) -> record::Chart<'a, Row> {
        record::Chart {
            title,
            x: ("epoch", "epoch", |r| r.epoch as f64),
            panels: &[record::Panel {
                y_label: "loss",
                log_y: true,
                series: &[("loss", "loss", |r| r.loss)],
                color_offset: 0,
            }],
        }
    }
}

// ------------------------------------------------------------------- the tests

fn ctx(out: &Path) -> Context {
    Context {
        device: Device::Cpu,
        device_requested: DeviceChoice::Cpu,
        seed: 0,
        out: out.to_path_buf(),
        plots: true,
        tag: None,
        checkpoints: None,
        tensorboard: false,
        board: None,
    }
}

fn sweep_args(resume: bool, shard: Option<Shard>) -> SweepArgs<Config> {
    SweepArgs {
        experiment: Config {
            epochs: 30,
            lr: vec![0.01, 0.1, 0.3],
        },
        seeds: vec![0, 1],
        resume,
        overwrite: false,
        shard,
        checkpointing: Default::default(),
    }
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn a_toy_section_runs_through_the_run_command() {
    let out = tempfile::tempdir().unwrap();
    let cfg = Config {
        epochs: 30,
        lr: vec![0.1],
    };
    experiment::run::<Toy>(&cfg, &ctx(out.path()), None).unwrap();
    let dir = out.path().join("toy");
    // Columns from the setting's and the figures' field names; the file name from the setting.
    let summary = read(dir.join("summary.csv"));
    let mut lines = summary.lines();
    assert_eq!(
        lines.next(),
        Some("impl,lr,status,epochs,final_loss,w,seconds")
    );
    let row: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(&row[..4], ["scratch", "0.1", "ok", "30"]);
    // Gradient descent with lr 0.1 on E[x²] ≈ 1 contracts |w − ŵ| by ≈ 0.8 per epoch: after
    // 30 epochs w is within 2·0.8³⁰ ≈ 0.003 of the least-squares ŵ, itself within a few
    // noise sd (0.1/√64) of 2.
    let w: f64 = row[5].parse().unwrap();
    assert!((w - 2.0).abs() < 0.05, "w = {w}");
    assert_eq!(read(dir.join("scratch-lr0.1.csv")).lines().count(), 31);
    assert!(dir.join("scratch-lr0.1.svg").exists() && dir.join("results.xlsx").exists());
    assert!(read(dir.join("run.json")).contains("\"status\": \"ok\""));
}

#[test]
fn a_toy_section_sweeps_resumes_shards_and_merges() {
    // One sweep whole.
    let whole = tempfile::tempdir().unwrap();
    let trained_in = |out: &Path| {
        TRAINED
            .lock()
            .unwrap()
            .iter()
            .filter(|(o, _)| o == out)
            .count()
    };
    sweep::run::<Toy>(&sweep_args(false, None), &ctx(whole.path())).unwrap();
    assert_eq!(trained_in(whole.path()), 6, "3 rates × 2 seeds");
    let dir = whole.path().join("sweep").join("toy");
    let summary = read(dir.join("summary.csv"));
    assert!(
        summary.starts_with("impl,lr,status,seeds,seeds_ok,loss_mean,loss_std,w_mean,w_std\n"),
        "{summary}"
    );
    assert_eq!(summary.lines().count(), 4);
    // The statistics read the records back into `Finals` by name: w's mean at lr 0.1 is the
    // fitted slope (within 0.05 of 2, as in the run-command test), its sd over two seeds small.
    let lr01: Vec<f64> = summary
        .lines()
        .nth(2)
        .unwrap()
        .split(',')
        .skip(5)
        .map(|v| v.parse().unwrap())
        .collect();
    assert!((lr01[2] - 2.0).abs() < 0.05 && lr01[3] < 0.05, "{summary}");
    assert!(
        lr01[0] < 0.02,
        "loss of a fitted line with noise sd 0.1: {summary}"
    );

    // --resume after a lost run: the others are kept, the summary is the same.
    std::fs::remove_file(dir.join("runs").join("scratch-lr0.3-seed1.json")).unwrap();
    std::fs::remove_file(dir.join("summary.csv")).unwrap();
    sweep::run::<Toy>(&sweep_args(true, None), &ctx(whole.path())).unwrap();
    assert_eq!(
        trained_in(whole.path()),
        7,
        "--resume retrains the lost run only"
    );
    assert_eq!(read(dir.join("summary.csv")), summary);

    // Two shards into one directory, then merge: the same summary.
    let sharded = tempfile::tempdir().unwrap();
    for index in 0..2 {
        let shard = Some(Shard { index, count: 2 });
        sweep::run::<Toy>(&sweep_args(false, shard), &ctx(sharded.path())).unwrap();
    }
    let merged = sharded.path().join("sweep").join("toy");
    assert!(!merged.join("summary.csv").exists(), "a shard summarised");
    sweep::merge::<Toy>(&merged, true).unwrap();
    assert_eq!(read(merged.join("summary.csv")), summary);
    assert_eq!(
        trained_in(sharded.path()),
        6,
        "each run trained by one shard"
    );
}
