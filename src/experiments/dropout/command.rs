//! §4.6 as a command (`dropout`): what the run command and the sweep need of it — its
//! settings, the final figures, file names, what a run saves, the printed table.
use super::charts;
use super::*;
use crate::experiment::{Experiment, FinalFigures as _};

/// §4.6 as a command: `dropout`, its runs one per version and setting (noise, rates, λ).
pub struct DropoutMlp;

/// A run's final figures (the summary's columns, in this order).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Finals {
    pub final_train_loss: f64,
    pub final_train_acc: f64,
    pub final_test_acc: f64,
    /// With `--mc-samples`.
    #[serde(flatten)]
    pub mc: Option<McFinals>,
}

/// The test accuracy with the noise left on (`--mc-samples`): one stochastic pass, and the
/// Monte-Carlo average of the samples' probabilities.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct McFinals {
    pub test_acc_stochastic: f64,
    pub test_acc_mc: f64,
}

impl McFinals {
    /// The one-pass stochastic test accuracy of `f` (NaN without `--mc-samples`).
    pub fn stochastic(f: &Finals) -> f64 {
        f.mc.as_ref().map_or(f64::NAN, |m| m.test_acc_stochastic)
    }

    /// The Monte-Carlo test accuracy of `f` (NaN without `--mc-samples`).
    pub fn mc(f: &Finals) -> f64 {
        f.mc.as_ref().map_or(f64::NAN, |m| m.test_acc_mc)
    }
}

impl experiment::FinalFigures for Finals {
    /// Final train accuracy − final test accuracy.
    fn gap(&self) -> f64 {
        experiment::round_derived(self.final_train_acc - self.final_test_acc)
    }
}

/// What a run leaves besides its curve.
pub struct Artifacts {
    /// The trained variables (for `--save-weights`).
    pub vs: tnn::VarStore,
    /// `--track-activations`.
    pub activations: Vec<ActivationRow>,
}

impl Experiment for DropoutMlp {
    const NAME: &'static str = "dropout";
    const CHECKPOINTS: bool = true;
    const NOT_RESULTS: &'static [&'static str] =
        &["data_dir", "offline", "save_weights", "cuda_graph"];
    type Config = Config;
    type Setting = Setting;
    /// Fashion-MNIST, on the device, loaded once for every run.
    type Data = FashionMnist;
    type Row = Epoch;
    type Finals = Finals;
    type Artifacts = Artifacts;

    fn settings(cfg: &Config) -> Vec<Setting> {
        cfg.settings()
    }

    fn unfinished(cfg: &Config) -> Finals {
        let nan = f64::NAN;
        Finals {
            final_train_loss: nan,
            final_train_acc: nan,
            final_test_acc: nan,
            mc: cfg.mc_samples.map(|_| McFinals {
                test_acc_stochastic: nan,
                test_acc_mc: nan,
            }),
        }
    }

    fn sweep_stats(cfg: &Config) -> Vec<(&'static str, Stat<Finals>)> {
        let mut stats: Vec<(&'static str, Stat<Finals>)> = vec![
            ("train_loss", |f| f.final_train_loss),
            ("train_acc", |f| f.final_train_acc),
            ("test_acc", |f| f.final_test_acc),
            ("gap", |f| f.gap()),
        ];
        if cfg.mc_samples.is_some() {
            stats.extend([
                ("test_acc_stochastic", McFinals::stochastic as Stat<Finals>),
                ("test_acc_mc", McFinals::mc),
            ]);
        }
        stats
    }

    fn impls(cfg: &Config) -> Vec<Impl> {
        cfg.impls.impls()
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
        if cfg.engine == Engine::Fused && cfg.precision != Precision::F32 && ctx.device.is_cuda() {
            anyhow::bail!(
                "--precision {} with --engine fused runs on the CPU kernels; on CUDA use \
                 --engine autograd (autocast) or --device cpu",
                cfg.precision.name()
            );
        }
        cfg.precision.check(ctx.device)?;
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
            crate::errln!(
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
        version: Impl,
        settings: &[Setting],
        ctx: &Context,
    ) -> Result<Vec<Run<Self>>> {
        settings
            .iter()
            .map(|&setting| {
                let name = label(version, setting);
                let figure = experiment::live_figure::<Epoch>(&ctx.titled(&name), cfg.epochs);
                let progress =
                    progress::Epochs::new(ctx.tagged(name), cfg.epochs).with_figure(figure);
                let trained = train(cfg, version, setting, data, ctx, &progress)?;
                let last = trained.curve.last();
                let (single, mc) = trained.mc.unwrap_or((f64::NAN, f64::NAN));
                let finals = Finals {
                    final_train_loss: last.map_or(f64::NAN, |e| e.train_loss),
                    final_train_acc: last.map_or(f64::NAN, |e| e.train_acc),
                    final_test_acc: last.map_or(f64::NAN, |e| e.test_acc),
                    mc: cfg.mc_samples.map(|_| McFinals {
                        test_acc_stochastic: single,
                        test_acc_mc: mc,
                    }),
                };
                Ok(Run {
                    finals,
                    seconds: trained.curve.iter().fold(0.0, |t, e| t + e.seconds),
                    curve: trained.curve,
                    status: trained.status,
                    artifacts: Artifacts {
                        vs: trained.vs,
                        activations: trained.activations,
                    },
                })
            })
            .collect()
    }

    fn label(version: Impl, setting: Setting) -> String {
        label(version, setting)
    }

    /// `<impl>[-<noise>][-wd<λ>]` alone, `<impl>[-<noise>]-p<p1>-<p2>[-wd<λ>]` among several
    /// settings (naming the noise when it is not the book's dropout, λ when not 0).
    fn stem(version: Impl, s: Setting, alone: bool) -> String {
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
        let f = &run.finals;
        let mut report = format!(
            "loss {:.3}, train acc {:.3}, test acc {:.3}",
            f.final_train_loss, f.final_train_acc, f.final_test_acc
        );
        if let Some(mc) = &f.mc {
            report += &format!(
                ", with the noise on: one pass {:.3}, Monte-Carlo {:.3}",
                mc.test_acc_stochastic, mc.test_acc_mc
            );
        }
        report
    }

    fn advice(cfg: &Config) -> String {
        format!("try a smaller --lr (this run used {})", cfg.lr)
    }

    /// Train loss, train accuracy and test accuracy against epoch (the book's figure).
    /// Two panels: the training loss; the train and test accuracy.
    fn write_overview_charts(
        dir: &Path,
        runs: &[(Impl, Setting, &Run<Self>)],
        plots: bool,
    ) -> Result<()> {
        charts::write_overview(dir, runs, plots)
    }

    fn sweep_charts(
        cfg: &Config,
        settings: &[SettingStats<Self>],
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
            save_weights(&run.artifacts.vs, &record::with_suffix(stem, "safetensors"))?;
        }
        if cfg.track_activations {
            let dir = stem.parent().unwrap_or(Path::new("."));
            let name = stem
                .file_name()
                .map_or("run".into(), |n| n.to_string_lossy());
            let name = format!("{name}-activations");
            charts::write_activations(dir, &name, &run.artifacts.activations, plots)?;
        }
        Ok(())
    }

    fn sweep_table_row(_: &Config, s: &SettingStats<Self>) -> Vec<(String, String)> {
        let row = vec![
            ("impl", s.version.name().to_string()),
            ("noise", s.setting.noise.name().to_string()),
            ("p1", fmt_num(s.setting.rates[0])),
            ("p2", fmt_num(s.setting.rates[1])),
            ("λ", fmt_num(s.setting.wd)),
            ("status", s.status.name().to_string()),
            (
                "train acc",
                format!("{:.4}", s.stat(|f| f.final_train_acc).0),
            ),
            ("test acc", format!("{:.4}", s.stat(|f| f.final_test_acc).0)),
            ("gap", format!("{:+.4}", s.stat(|f| f.gap()).0)),
        ];
        row.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    fn memory_flags(c: &Config) -> String {
        format!("--batch-size (now {})", c.batch_size)
    }
}
