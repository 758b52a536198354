//! Settings and final figures as columns: a serde struct's fields, in their declared order,
//! as names and cells (and back, for a sweep's records).
use super::{fmt_num, Experiment, FinalFigures as _};
use crate::options::Impl;
use crate::record::Cell;
use crate::stop::Status;
use anyhow::Result;
use serde::Serialize;

/// A struct's figures by serde, in their declared order: names and values (NaN included).
pub fn figures<F: Serialize>(finals: &F) -> Vec<(String, f64)> {
    setting_fields(finals)
        .into_iter()
        .map(|(name, cell)| match cell {
            Cell::Float(v) => (name, v),
            _ => panic!("final figure {name} is not a number"),
        })
        .collect()
}

/// The figures `names` with their `values` (as [`figures`] lists them) read back into their
/// struct: a sweep's records made typed again.
pub fn finals_from<F: serde::de::DeserializeOwned>(names: &[String], values: &[f64]) -> Result<F> {
    use serde::de::value::{Error, MapDeserializer};
    let entries = names.iter().map(|n| n.as_str()).zip(values.iter().copied());
    F::deserialize(MapDeserializer::<_, Error>::new(entries))
        .map_err(|e| anyhow::anyhow!("final figures {names:?}: {e}"))
}

/// The leading columns of a run's line: version, then the setting's values.
pub fn setting_cells<E: Experiment>(version: Impl, setting: E::Setting) -> Vec<Cell> {
    std::iter::once(Cell::text(version.name()))
        .chain(setting_fields(&setting).into_iter().map(|(_, cell)| cell))
        .collect()
}

/// A setting's fields, by serde, in their declared order: their names and values (strings as
/// text, numbers as floats).
pub fn setting_fields<S: Serialize>(setting: &S) -> Vec<(String, Cell)> {
    let text = serde_json::to_string(setting).expect("a setting serialises");
    let mut de = serde_json::Deserializer::from_str(&text);
    let OrderedFields(fields) =
        serde::Deserialize::deserialize(&mut de).expect("a setting serialises to a struct");
    fields
        .into_iter()
        .map(|(name, v)| {
            let cell = match v {
                serde_json::Value::String(s) => Cell::Text(s),
                // serde_json writes a NaN as null.
                serde_json::Value::Null => Cell::Float(f64::NAN),
                v => Cell::Float(v.as_f64().expect("a setting's number")),
            };
            (name, cell)
        })
        .collect()
}

/// A JSON object's entries in the order they are written (serde_json's `Map` sorts them).
struct OrderedFields(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for OrderedFields {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = OrderedFields;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a struct")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<OrderedFields, A::Error> {
                let mut fields = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    fields.push(entry);
                }
                Ok(OrderedFields(fields))
            }
        }
        d.deserialize_map(Fields)
    }
}

/// The names of an experiment's setting fields: the summary's setting columns, and the flags a
/// sweep varies.
pub fn setting_columns<E: Experiment>(cfg: &E::Config) -> Vec<String> {
    E::settings(cfg)
        .first()
        .map(|s| {
            setting_fields(s)
                .into_iter()
                .map(|(name, _)| name)
                .collect()
        })
        .unwrap_or_default()
}

/// A setting's value as it appears in names: text as it is, numbers by [`fmt_num`].
pub(super) fn cell_text(cell: &Cell) -> String {
    match cell {
        Cell::Text(s) => s.clone(),
        Cell::Float(v) => fmt_num(*v),
        Cell::Int(v) => v.to_string(),
    }
}

/// The configuration's fingerprint: an MD5 of its JSON without what the sweep varies (the
/// experiment's swept flags, `--impl`, the seeds) and without what does not change a result
/// ([`Experiment::NOT_RESULTS`]: where the data are, what else is saved).
/// The device's kind (`cpu`, `cuda`) is part of it: the same seed gives other numbers there;
/// so is `--reproducible` on the CPU (other kernels).
pub fn fingerprint<E: Experiment>(cfg: &E::Config, device: tch::Device) -> Result<String>
where
    E::Config: Serialize,
{
    use md5::{Digest, Md5};
    let mut value = serde_json::to_value(cfg)?;
    if let Some(map) = value.as_object_mut() {
        let swept = super::setting_columns::<E>(cfg);
        let not_results = E::NOT_RESULTS.iter().map(|k| k.to_string());
        for key in swept.into_iter().chain(not_results) {
            map.remove(&key);
        }
        // Every experiment's `--impl`: a sweep varies the versions too.
        map.remove("implementation");
    }
    let text = serde_json::to_string(&value)?;
    let kind = match (device.is_cuda(), crate::cpu::reproducible()) {
        (true, _) => "cuda",
        (false, false) => "cpu",
        (false, true) => "cpu reproducible",
    };
    let digest = Md5::digest(format!("{}\n{kind}\n{text}", E::NAME).as_bytes());
    Ok(crate::data::download::hex(&digest))
}

/// Ends a run's TensorBoard run (see [`crate::tensorboard`]) when the command writes them: its
/// hyper-parameters — the version, the setting's fields, the configuration's other single
/// values and the seed — its final figures as the HParams dashboard's metrics
/// (`final/<figure>`, at the run's last epoch) and whether it finished. Fails with the run's
/// first write failure.
pub fn finish_board<E: Experiment>(
    cfg: &E::Config,
    ctx: &super::Context,
    version: Impl,
    setting: E::Setting,
    run: &super::Run<E>,
) -> Result<()> {
    use crate::tensorboard::Value;
    let Some(board) = &ctx.board else {
        return Ok(());
    };
    let mut hparams = vec![("impl".to_string(), Value::Text(version.name().into()))];
    for (name, cell) in setting_fields(&setting) {
        let value = match cell {
            Cell::Text(s) => Value::Text(s),
            Cell::Float(v) => Value::Number(v),
            Cell::Int(v) => Value::Number(v as f64),
        };
        hparams.push((name, value));
    }
    if let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(cfg) {
        for (name, v) in fields {
            let skip = name == "implementation"
                || E::NOT_RESULTS.contains(&name.as_str())
                || hparams.iter().any(|(n, _)| *n == name);
            let value = match v {
                _ if skip => continue,
                serde_json::Value::Number(n) => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
                serde_json::Value::String(s) => Value::Text(s),
                // A number, 0 or 1, as PyTorch's add_hparams writes a bool (`isinstance(v,
                // int)` comes first there), so both sides' runs have the same columns.
                serde_json::Value::Bool(b) => Value::Number(f64::from(u8::from(b))),
                _ => continue,
            };
            hparams.push((name, value));
        }
    }
    hparams.push(("seed".into(), Value::Number(ctx.seed as f64)));
    let mut metrics: Vec<(String, f64)> = figures(&run.finals)
        .into_iter()
        .map(|(name, v)| (format!("final/{}", name.trim_start_matches("final_")), v))
        .collect();
    metrics.push(("final/gap".into(), run.finals.gap()));
    let name = format!("{}-seed{}", E::stem(version, setting, false), ctx.seed);
    let ok = run.status == Status::Ok;
    board.finish(&name, &hparams, &metrics, run.curve.len() as i64, ok)
}
