//! §4.6 as a command (`dropout`): what the run command and the sweep need of it — its
//! settings, the final figures, file names, what a run saves, the printed table.
use super::charts;
use super::*;
use crate::experiment::Experiment;

/// §4.6 as a command: `dropout`, its runs one per version and setting (noise, rates, λ).
pub struct DropoutMlp;

/// What a run leaves besides its curve.
pub struct Model {
    /// The trained variables (for `--save-weights`).
    pub vs: tnn::VarStore,
    /// `--track-activations`.
    pub activations: Vec<ActivationRow>,
}

impl Experiment for DropoutMlp {
    const NAME: &'static str = "dropout";
    const SWEEP_TABLE: &'static [&'static str] = &[
        "impl",
        "noise",
        "p1",
        "p2",
        "λ",
        "status",
        "train acc",
        "test acc",
        "gap",
    ];
    const NOT_RESULTS: &'static [&'static str] =
        &["data_dir", "offline", "save_weights", "cuda_graph"];
    type Config = Config;
    type Setting = Setting;
    /// Fashion-MNIST, on the device, loaded once for every run.
    type Data = FashionMnist;
    type Row = Epoch;
    type Model = Model;

    fn settings(cfg: &Config) -> Vec<Setting> {
        cfg.settings()
    }

    fn finals(cfg: &Config) -> Vec<&'static str> {
        let mut finals = vec!["final_train_loss", "final_train_acc", "final_test_acc"];
        if cfg.mc_samples.is_some() {
            finals.extend(["test_acc_stochastic", "test_acc_mc"]);
        }
        finals
    }

    fn sweep_stats(cfg: &Config) -> Vec<(&'static str, Stat)> {
        let mut stats = vec![
            ("train_loss", Stat::Final(0)),
            ("train_acc", Stat::Final(1)),
            ("test_acc", Stat::Final(2)),
            ("gap", Stat::Gap),
        ];
        if cfg.mc_samples.is_some() {
            stats.extend([
                ("test_acc_stochastic", Stat::Final(3)),
                ("test_acc_mc", Stat::Final(4)),
            ]);
        }
        stats
    }

    fn versions(cfg: &Config) -> Vec<Version> {
        cfg.versions.versions()
    }

    /// Setting by setting, each version in turn.
    fn schedule(cfg: &Config) -> Vec<(Version, Vec<Setting>)> {
        cfg.settings()
            .into_iter()
            .flat_map(|s| {
                cfg.versions
                    .versions()
                    .into_iter()
                    .map(move |v| (v, vec![s]))
            })
            .collect()
    }

    /// Refuses what cannot run (`--cuda-graph on` where it cannot apply, a noise the fused
    /// engine lacks, Gaussian noise at a rate of 1), then loads Fashion-MNIST.
    fn prepare(cfg: &Config, ctx: &Context) -> Result<FashionMnist> {
        cfg.cuda_graphs(ctx.device)?;
        if cfg.engine == Engine::Fused
            && (cfg.noise.iter().any(|n| *n != NoiseKind::Bernoulli) || cfg.input_noise > 0.0)
        {
            anyhow::bail!(
                "--engine fused implements the book's dropout (--noise bernoulli) without \
                 --input-noise; use --engine autograd for --noise gaussian/dropconnect or \
                 --input-noise"
            );
        }
        if cfg.noise.contains(&NoiseKind::Gaussian)
            && cfg.dropout1.iter().chain(&cfg.dropout2).any(|&p| p >= 1.0)
        {
            anyhow::bail!(
                "--noise gaussian at a rate of 1 has infinite variance (p/(1−p)); choose \
                 --dropout1/--dropout2 below 1"
            );
        }
        let source = fashion_mnist::Source::new(cfg.data_dir.clone(), cfg.offline);
        let data = fashion_mnist::load(&source, ctx.device)?;
        if progress::mode() != progress::Mode::Quiet {
            eprintln!(
                "dropout: Fashion-MNIST from {} on {}",
                data.dir.display(),
                crate::device::name(ctx.device)
            );
        }
        Ok(data)
    }

    fn train(
        cfg: &Config,
        data: &FashionMnist,
        version: Version,
        settings: &[Setting],
        ctx: &Context,
    ) -> Vec<Run<Self>> {
        settings
            .iter()
            .map(|&setting| {
                let progress =
                    progress::Epochs::new(ctx.tagged(label(version, setting)), cfg.epochs);
                let trained = train(cfg, version, setting, data, ctx, &progress);
                let last = trained.curve.last();
                let mut finals = vec![
                    last.map_or(f64::NAN, |e| e.train_loss),
                    last.map_or(f64::NAN, |e| e.train_acc),
                    last.map_or(f64::NAN, |e| e.test_acc),
                ];
                if cfg.mc_samples.is_some() {
                    let (single, mc) = trained.mc.unwrap_or((f64::NAN, f64::NAN));
                    finals.extend([single, mc]);
                }
                Run {
                    finals,
                    seconds: trained.curve.iter().fold(0.0, |t, e| t + e.seconds),
                    curve: trained.curve,
                    status: trained.status,
                    model: Model {
                        vs: trained.vs,
                        activations: trained.activations,
                    },
                }
            })
            .collect()
    }

    fn label(version: Version, setting: Setting) -> String {
        label(version, setting)
    }

    /// `<impl>[-<noise>][-wd<λ>]` alone, `<impl>[-<noise>]-p<p1>-<p2>[-wd<λ>]` among several
    /// settings (naming the noise when it is not the book's dropout, λ when not 0).
    fn stem(version: Version, s: Setting, alone: bool) -> String {
        let mut stem = version.name().to_string();
        if s.noise != NoiseKind::Bernoulli {
            stem += &format!("-{}", s.noise.name());
        }
        if !alone {
            stem += &format!("-p{}-{}", fmt_num(s.rates[0]), fmt_num(s.rates[1]));
        }
        if s.wd > 0.0 {
            stem += &format!("-wd{}", fmt_num(s.wd));
        }
        stem
    }

    fn report(run: &Run<Self>) -> String {
        let [loss, train_acc, test_acc] = [run.finals[0], run.finals[1], run.finals[2]];
        let mut report =
            format!("loss {loss:.3}, train acc {train_acc:.3}, test acc {test_acc:.3}");
        if let [single, mc] = run.finals[3..] {
            report += &format!(", with the noise on: one pass {single:.3}, Monte-Carlo {mc:.3}");
        }
        report
    }

    fn advice(cfg: &Config) -> String {
        format!("try a smaller --lr (this run used {})", cfg.lr)
    }

    /// Final train accuracy − final test accuracy.
    fn gap(finals: &[f64]) -> f64 {
        experiment::round_derived(finals[1] - finals[2])
    }

    /// Train loss, train accuracy and test accuracy against epoch (the book's figure).
    /// Two panels: the training loss; the train and test accuracy.
    fn write_overview_charts(
        dir: &Path,
        runs: &[(Version, Setting, &Run<Self>)],
        plots: bool,
    ) -> Result<()> {
        charts::write_overview(dir, runs, plots)
    }

    fn sweep_charts(
        cfg: &Config,
        settings: &[SettingStats<Setting>],
        seeds: usize,
    ) -> Vec<experiment::SweepChart> {
        charts::sweep(cfg, settings, seeds)
    }

    fn curve_chart<'a>(title: &'a str) -> record::Chart<'a, Epoch> {
        record::Chart {
            title,
            x: ("epoch", "epoch", |e| e.epoch as f64),
            panels: &[
                record::Panel {
                    y_label: "loss",
                    log_y: false,
                    series: &[("train loss", "train_loss", |e| e.train_loss)],
                    color_offset: 0,
                },
                record::Panel {
                    y_label: "accuracy",
                    log_y: false,
                    series: &[
                        ("train acc", "train_acc", |e| e.train_acc),
                        ("test acc", "test_acc", |e| e.test_acc),
                    ],
                    color_offset: 1,
                },
            ],
        }
    }

    /// `--save-weights`: the trained parameters under PyTorch's names; `--track-activations`:
    /// `<run>-activations.csv` and its chart.
    fn save(cfg: &Config, run: &Run<Self>, stem: &Path, plots: bool) -> Result<()> {
        if cfg.save_weights {
            save_weights(&run.model.vs, &record::with_suffix(stem, "safetensors"))?;
        }
        if cfg.track_activations {
            let dir = stem.parent().unwrap_or(Path::new("."));
            let name = stem
                .file_name()
                .map_or("run".into(), |n| n.to_string_lossy());
            let name = format!("{name}-activations");
            charts::write_activations(dir, &name, &run.model.activations, plots)?;
        }
        Ok(())
    }

    fn sweep_table_row(s: &SettingStats<Setting>) -> Vec<String> {
        vec![
            s.version.name().to_string(),
            s.setting.noise.name().to_string(),
            fmt_num(s.setting.rates[0]),
            fmt_num(s.setting.rates[1]),
            fmt_num(s.setting.wd),
            s.status.name().to_string(),
            format!("{:.4}", s.stat("train_acc").0),
            format!("{:.4}", s.stat("test_acc").0),
            format!("{:+.4}", s.stat("gap").0),
        ]
    }

    fn memory_flags(c: &Config) -> String {
        format!("--batch-size (now {})", c.batch_size)
    }
}
