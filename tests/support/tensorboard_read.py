# SPDX-License-Identifier: Apache-2.0
"""Reads a run's TensorBoard event files with the `tensorboard` package itself.

Used by tests/unit/test_tensorboard.cpp as an independent reader of what neox
writes: TensorBoard's EventAccumulator (the loader behind `tensorboard
--logdir`) checks both CRCs of every record and stops at the first bad or
truncated one, and honours SessionLog START (drops an earlier run's steps
from that step on).

    tensorboard_read.py PATH   (an event file, or a run directory)

Prints one JSON object per scalar, sorted by tag then file order:
    {"tag": ..., "step": ..., "value": ..., "wall_time": ...}
Exits 3, with a message on stderr, when the tensorboard package is missing
or cannot be imported (the test then skips).
"""
import json
import sys


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        from tensorboard.backend.event_processing import event_accumulator
    except Exception as e:  # missing, or unusable (e.g. a protobuf it does not support)
        print(
            f"cannot import tensorboard ({e}); install it with: "
            f"{sys.executable} -m pip install tensorboard",
            file=sys.stderr,
        )
        return 3
    # SCALARS: 0 keeps every scalar (the default keeps a sample of 10,000).
    acc = event_accumulator.EventAccumulator(
        sys.argv[1], size_guidance={event_accumulator.SCALARS: 0}
    )
    acc.Reload()
    for tag in sorted(acc.Tags()["scalars"]):
        for e in acc.Scalars(tag):
            # repr-exact floats: json writes the shortest form that reads back.
            print(
                json.dumps(
                    {"tag": tag, "step": e.step, "value": e.value, "wall_time": e.wall_time}
                )
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
