"""`tfds build` without the packages the `tfds` script needs: same arguments, same code.

tensorflow-datasets 4.9.10's `tfds` script imports all its commands on start:
`convert_format` defines an Apache Beam class at import and `build_croissant`
imports mlcroissant, so `tfds build` fails with "No module named
'apache_beam'" (then 'mlcroissant') unless both are installed (apache-beam is
large and pins protobuf 6; this project needs neither). This runs tfds's own
`build` command alone:

  python -m vlm_jax.datasets.build vlm_jax/datasets/youcook2_style.py --config demo \\
      --manual_dir ~/youcook2_manual --data_dir ~/tensorflow_datasets

Every `tfds build` flag works (`python -m vlm_jax.datasets.build --help`).
"""

from absl import app
from tensorflow_datasets.scripts.cli import build as tfds_build
from tensorflow_datasets.scripts.cli import cli_utils


def main(args: tfds_build.Args) -> None:
  args.execute()


if __name__ == '__main__':
  app.run(main, flags_parser=cli_utils.make_flags_parser(
      tfds_build.Args, description='tfds build, without the other tfds commands'))
