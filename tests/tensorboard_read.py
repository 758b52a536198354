"""Reads every TensorBoard run under a directory with TensorBoard's own reader and prints it
as JSON, for tests/tensorboard.rs:

    {"<run>": {"scalars": {"<tag>": [[step, value], ...]},
               "hparams": {"<name>": value} | null, "metrics": ["<tag>", ...] | null,
               "status": "STATUS_SUCCESS" | ... | null}}

Steps are listed as the file holds them (a step written twice would appear twice).
"""
import json
import os
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2


def value_of(v):
    kind = v.WhichOneof("kind")
    return {"number_value": v.number_value, "string_value": v.string_value, "bool_value": v.bool_value}[kind]


def read(run_dir):
    ea = EventAccumulator(run_dir, size_guidance={"scalars": 0, "tensors": 0})
    ea.Reload()
    scalars = {tag: [[e.step, e.value] for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}
    out = {"scalars": scalars, "hparams": None, "metrics": None, "status": None}
    try:
        content = ea.PluginTagToContent(metadata.PLUGIN_NAME)
    except KeyError:
        content = {}
    for tag, data in content.items():
        d = plugin_data_pb2.HParamsPluginData.FromString(data)
        assert d.version == metadata.PLUGIN_DATA_VERSION, d.version
        if tag == metadata.SESSION_START_INFO_TAG:
            out["hparams"] = {k: value_of(v) for k, v in d.session_start_info.hparams.items()}
        elif tag == metadata.EXPERIMENT_TAG:
            out["metrics"] = [m.name.tag for m in d.experiment.metric_infos]
            names = [h.name for h in d.experiment.hparam_infos]
            assert sorted(names) == sorted(set(names)), names
        elif tag == metadata.SESSION_END_INFO_TAG:
            out["status"] = api_pb2.Status.Name(d.session_end_info.status)
    return out


def main(root):
    runs = {}
    for dirpath, _, files in os.walk(root):
        if any("tfevents" in f for f in files):
            runs[os.path.relpath(dirpath, root)] = read(dirpath)
    json.dump(runs, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
