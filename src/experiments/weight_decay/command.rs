//! §4.5 as a command (`weight-decay`): what the run command and the sweep need of it — its
//! settings, the final figures, file names, the summary's marks and notes, the printed table.
use super::charts;
use super::*;
use crate::experiment::{Experiment, FinalFigures as _};
use serde::Deserialize;

/// §4.5 as a command: `weight-decay`, its runs one per version and setting (optimizer,
/// penalty, λ).
pub struct WeightDecay;

/// A run's final figures (the summary's columns, in this order).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Finals {
    /// ‖w‖.
    pub w_norm: f64,
    /// ‖w‖₁.
    pub w_l1: f64,
    /// The fraction of weights with |wᵢ| < 1e-4.
    pub w_small: f64,
    pub final_train_loss: f64,
    pub final_test_loss: f64,
    /// With `--n-val`.
    #[serde(flatten)]
    pub val: Option<ValFinals>,
}

/// The final figure of a run with a validation split (`--n-val`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValFinals {
    pub final_val_loss: f64,
}

impl Finals {
    /// The final validation loss (NaN without `--n-val`).
    pub fn val_loss(&self) -> f64 {
        self.val.as_ref().map_or(f64::NAN, |v| v.final_val_loss)
    }
}

impl experiment::FinalFigures for Finals {
    /// Final test loss − final train loss.
    fn gap(&self) -> f64 {
        experiment::round_derived(self.final_test_loss - self.final_train_loss)
    }
}

impl WeightDecay {
    /// The setting of `range` with the lowest mean of `stat` among those that finished.
    fn lowest(
        settings: &[SettingStats<Self>],
        range: std::ops::Range<usize>,
        stat: Stat<Finals>,
    ) -> Option<usize> {
        range
            .filter(|&i| settings[i].seeds_ok > 0 && settings[i].stat(stat).0.is_finite())
            .min_by(|&a, &b| {
                settings[a]
                    .stat(stat)
                    .0
                    .total_cmp(&settings[b].stat(stat).0)
            })
    }
}

impl Experiment for WeightDecay {
    const NAME: &'static str = "weight-decay";
    const CHECKPOINTS: bool = true;
    type Config = Config;
    type Setting = Setting;
    /// Nothing: each run draws its data from its own seed.
    type Data = ();
    type Row = Epoch;
    type Finals = Finals;
    type Artifacts = ();

    /// Penalty by penalty, optimizer by optimizer, every λ.
    fn settings(cfg: &Config) -> Vec<Setting> {
        let mut settings = Vec::new();
        for &penalty in &cfg.penalty {
            for &optimizer in &cfg.optimizer {
                for &wd in &cfg.wd {
                    settings.push(Setting {
                        optimizer,
                        penalty,
                        wd,
                    });
                }
            }
        }
        settings
    }

    /// The scratch version has one optimizer, the book's minibatch SGD.
    fn settings_for(cfg: &Config, version: Impl) -> Vec<Setting> {
        let mut settings = Self::settings(cfg);
        if version == Impl::Scratch {
            settings.retain(|s| s.optimizer == cfg.optimizer[0]);
            for s in &mut settings {
                s.optimizer = Optimizer::Sgd;
            }
        }
        settings
    }

    fn unfinished(cfg: &Config) -> Finals {
        let nan = f64::NAN;
        Finals {
            w_norm: nan,
            w_l1: nan,
            w_small: nan,
            final_train_loss: nan,
            final_test_loss: nan,
            val: cfg.n_val.map(|_| ValFinals {
                final_val_loss: nan,
            }),
        }
    }

    fn sweep_stats(cfg: &Config) -> Vec<(&'static str, Stat<Finals>)> {
        let mut stats: Vec<(&'static str, Stat<Finals>)> = vec![
            ("train_loss", |f| f.final_train_loss),
            ("test_loss", |f| f.final_test_loss),
            ("gap", |f| f.gap()),
            ("w_norm", |f| f.w_norm),
            ("w_l1", |f| f.w_l1),
            ("w_small", |f| f.w_small),
        ];
        if cfg.n_val.is_some() {
            stats.push(("val_loss", Finals::val_loss));
        }
        stats
    }

    fn impls(cfg: &Config) -> Vec<Impl> {
        cfg.impls.impls()
    }

    /// Impl by impl, then penalty by penalty and optimizer by optimizer, every λ of a
    /// group together (the fused engine trains them as one batched model).
    fn schedule(cfg: &Config) -> Vec<(Impl, Vec<Setting>)> {
        let mut groups = Vec::new();
        for version in cfg.impls.impls() {
            let settings = Self::settings_for(cfg, version);
            for chunk in settings.chunks(cfg.wd.len()) {
                groups.push((version, chunk.to_vec()));
            }
        }
        groups
    }

    /// Refuses what cannot run: an optimizer for the scratch version alone, and the fused
    /// engine with anything but the book's SGD and L2.
    fn prepare(cfg: &Config, ctx: &Context) -> Result<()> {
        let non_sgd: Vec<&str> = cfg
            .optimizer
            .iter()
            .filter(|o| **o != Optimizer::Sgd)
            .map(|o| o.name())
            .collect();
        if cfg.impls == ImplChoice::Scratch && !non_sgd.is_empty() {
            anyhow::bail!(
                "--optimizer {} applies to the concise version; the scratch version is the \
                 book's own minibatch SGD. Add --impl concise (or both), or drop --optimizer",
                non_sgd.join(",")
            );
        }
        if cfg.penalty.contains(&Penalty::L1Prox) && !non_sgd.is_empty() {
            anyhow::bail!(
                "--penalty l1-prox is a proximal step for SGD; with --optimizer {} use --penalty \
                 l1 (the subgradient) or l2",
                non_sgd.join(",")
            );
        }
        if cfg.engine == Engine::Fused && cfg.precision != Precision::F32 {
            anyhow::bail!(
                "--precision {} is for --engine autograd so far: the fused engine trains in f32",
                cfg.precision.name()
            );
        }
        cfg.precision.check(ctx.device)?;
        if cfg.engine == Engine::Fused
            && (!non_sgd.is_empty() || cfg.penalty.iter().any(|p| *p != Penalty::L2))
        {
            anyhow::bail!(
                "--engine fused trains the book's SGD with the L2 penalty only; use --engine \
                 autograd for --optimizer adam/adamw or --penalty l1/l1-prox"
            );
        }
        Ok(())
    }

    fn train(
        cfg: &Config,
        _: &(),
        version: Impl,
        settings: &[Setting],
        ctx: &Context,
    ) -> Result<Vec<Run<Self>>> {
        let with_val = cfg.n_val.is_some();
        Ok(run_group(cfg, version, settings, ctx)?
            .into_iter()
            .map(|(trained, seconds)| {
                let last = trained.curve.last();
                let finals = Finals {
                    w_norm: trained.w_norm,
                    w_l1: trained.w_l1,
                    w_small: trained.w_small,
                    final_train_loss: last.map_or(f64::NAN, |e| e.train_loss),
                    final_test_loss: last.map_or(f64::NAN, |e| e.test_loss),
                    val: with_val.then_some(ValFinals {
                        final_val_loss: trained.val_loss,
                    }),
                };
                Run {
                    finals,
                    curve: trained.curve,
                    status: trained.status,
                    seconds,
                    artifacts: (),
                }
            })
            .collect())
    }

    fn label(version: Impl, setting: Setting) -> String {
        label(version, setting, &[setting.wd])
    }

    /// `<impl>[-<optimizer>][-<penalty>]-wd<λ>`, naming only what differs from the book's.
    fn stem(version: Impl, setting: Setting, _alone: bool) -> String {
        format!(
            "{}{}-wd{}",
            version.name(),
            setting.suffix(),
            fmt_num(setting.wd)
        )
    }

    fn report(run: &Run<Self>) -> String {
        format!("L2 norm of w: {:.6}", run.finals.w_norm)
    }

    fn advice(cfg: &Config) -> String {
        format!(
            "try a smaller --lr (this run used {}) or a smaller λ (--wd)",
            cfg.lr
        )
    }

    /// Train and test loss against epoch, log scale (the book's figure).
    fn curve_chart<'a>(title: &'a str) -> record::Chart<'a, Epoch> {
        record::Chart {
            title,
            x: ("epoch", "epoch", |e| e.epoch as f64),
            panels: &[record::Panel {
                y_label: "loss",
                log_y: true,
                series: &[
                    ("train", "train_loss", |e| e.train_loss),
                    ("test", "test_loss", |e| e.test_loss),
                ],
                color_offset: 0,
            }],
        }
    }

    fn curve_title(version: Impl, setting: Setting, run: &Run<Self>) -> String {
        format!(
            "weight decay, {}{}, λ = {}: ‖w‖ = {:.3}",
            version.name(),
            setting.variant(),
            fmt_num(setting.wd),
            run.finals.w_norm
        )
    }

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

    /// With `--n-val`: `chosen_by_validation` (the λ of lowest mean validation loss) and
    /// `best_by_test` (of lowest mean test loss), true on one row per version, optimizer and
    /// penalty.
    fn sweep_marks(
        cfg: &Config,
        settings: &[SettingStats<Self>],
    ) -> (Vec<&'static str>, Vec<Vec<Cell>>) {
        if cfg.n_val.is_none() {
            return (Vec::new(), vec![Vec::new(); settings.len()]);
        }
        let mut marks = vec![vec![Cell::text("false"), Cell::text("false")]; settings.len()];
        for range in charts::groups(settings) {
            if let Some(i) = Self::lowest(settings, range.clone(), Finals::val_loss) {
                marks[i][0] = Cell::text("true");
            }
            if let Some(i) = Self::lowest(settings, range, |f| f.final_test_loss) {
                marks[i][1] = Cell::text("true");
            }
        }
        (vec!["chosen_by_validation", "best_by_test"], marks)
    }

    /// With `--n-val`: for each group, the λ validation picks and the best λ on the test set,
    /// with their test losses.
    fn sweep_notes(cfg: &Config, settings: &[SettingStats<Self>]) -> Vec<String> {
        let Some(n_val) = cfg.n_val else {
            return Vec::new();
        };
        let mut notes = Vec::new();
        for range in charts::groups(settings) {
            let chosen = Self::lowest(settings, range.clone(), Finals::val_loss);
            let best = Self::lowest(settings, range, |f| f.final_test_loss);
            if let (Some(c), Some(b)) = (chosen, best) {
                let (c, b) = (&settings[c], &settings[b]);
                notes.push(format!(
                    "{}: validation ({n_val} examples) picks λ={} (test loss {:.3e}); the lowest \
                     test loss is at λ={} ({:.3e})",
                    charts::group_name(c.version, c.setting),
                    fmt_num(c.setting.wd),
                    c.stat(|f| f.final_test_loss).0,
                    fmt_num(b.setting.wd),
                    b.stat(|f| f.final_test_loss).0
                ));
            }
        }
        notes
    }

    fn sweep_table_row(cfg: &Config, s: &SettingStats<Self>) -> Vec<(String, String)> {
        let val = match cfg.n_val {
            Some(_) => format!("{:.3e}", s.stat(Finals::val_loss).0),
            None => "—".to_string(),
        };
        let row = vec![
            ("impl", s.version.name().to_string()),
            ("optimizer", s.setting.optimizer.name().to_string()),
            ("penalty", s.setting.penalty.name().to_string()),
            ("λ", fmt_num(s.setting.wd)),
            ("status", s.status.name().to_string()),
            (
                "train loss",
                format!("{:.3e}", s.stat(|f| f.final_train_loss).0),
            ),
            (
                "test loss",
                format!("{:.3e}", s.stat(|f| f.final_test_loss).0),
            ),
            ("gap", format!("{:.3e}", s.stat(|f| f.gap()).0)),
            ("‖w‖", format!("{:.3}", s.stat(|f| f.w_norm).0)),
            ("val loss", val),
        ];
        row.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    fn memory_flags(c: &Config) -> String {
        let mut flags = format!(
            "--n-train / --n-test / --num-inputs / --batch-size (now {} / {} / {} / {})",
            c.n_train, c.n_test, c.num_inputs, c.batch_size
        );
        if let Some(n_val) = c.n_val {
            flags += &format!(" or --n-val (now {n_val})");
        }
        flags
    }
}
