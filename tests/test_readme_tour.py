"""The README's five-minute tour, run as the README writes it: each command of its code block, in order, from
the project's folder, with only the user's own file names (``my_xray.jpeg``, ``heatmaps/``) pointed at a
temporary folder. The test reads the commands from README.md, so a tour that stops working, or a README that
changes its tour without a working command, fails here.

The smoke run goes where the README says (``runs/smoke-<time>/``) and is removed at the end; the explorer is
started, answers its page, and is stopped with SIGTERM.
"""

import os
import re
import shlex
import shutil
import subprocess
import urllib.request

import numpy as np
import pytest
from helpers import PNEUMO, free_port, real_training_files, wait_for, write_png

from pneumo_utils.config import PROJECT_ROOT
from pneumo_utils.data.synthetic import synthetic_xray
from pneumo_utils.runs import serve

TOUR_HEADING = "## Five minutes, no data needed"


def tour_commands() -> list[list[str]]:
    """The commands of the tour's code block, comments removed, each split as a shell would."""
    text = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split(TOUR_HEADING, 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1)
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.split("#")[0].strip()]


def test_the_tour_is_the_four_commands_the_readme_promises():

    commands = tour_commands()
    assert [command[:2] for command in commands] == [
        ["pneumo", "run"],
        ["pneumo", "predict"],
        ["pneumo", "gradcam"],
        ["pneumo", "explore"],
    ]


@pytest.mark.slow
def test_the_readme_five_minute_tour_runs_as_written(tmp_path):

    real = real_training_files(1)
    xray = tmp_path / "my_xray.jpeg"
    if real:  # a real film where the data are beside the checkout (CI), else a synthetic one
        xray.write_bytes(real[0].read_bytes())
    else:
        write_png(tmp_path / "x.png", synthetic_xray(np.random.default_rng(0), 256, pneumonia=True))
        (tmp_path / "x.png").rename(xray)  # OpenCV reads by content, not by suffix
    yours = {"my_xray.jpeg": str(xray), "heatmaps/": str(tmp_path / "heatmaps") + "/"}
    # a user's shell: without the test session's own settings (conftest points notebooks at a temporary folder)
    environment = {
        key: value for key, value in os.environ.items() if key not in ("PNEUMO_OUTPUT_DIR", "PNEUMO_PROFILE")
    }
    runs_before = set((PROJECT_ROOT / "runs").glob("smoke-*"))
    made = []
    try:
        for command in tour_commands():
            arguments = [yours.get(argument, argument) for argument in command[1:]]
            if command[1] == "explore":
                _explore_answers_and_stops(arguments, tmp_path, environment)
                continue
            result = subprocess.run(
                [*PNEUMO, *arguments], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=900, env=environment
            )
            assert result.returncode == 0, (command, result.stderr[-2000:])
            assert "Traceback" not in result.stderr, (command, result.stderr[-2000:])
            if command[1] == "run":
                made = sorted(set((PROJECT_ROOT / "runs").glob("smoke-*")) - runs_before)
                assert len(made) == 1, (made, result.stderr[-1500:])  # runs/smoke-<time>/, as the README says
                assert sorted(path.name for path in (made[0] / "executed").glob("*.html")) == [
                    "01_eda.html",
                    "02_train.html",
                    "03_evaluate.html",
                    "04_gradcam.html",
                ]
            elif command[1] == "predict":
                assert xray.name in result.stdout
                assert re.search(r"\b(NORMAL|PNEUMONIA|REFER|OUT_OF_DISTRIBUTION)\b", result.stdout), result.stdout
            elif command[1] == "gradcam":
                assert list((tmp_path / "heatmaps").glob("*.png")), result.stderr
    finally:
        for folder in made:
            shutil.rmtree(folder, ignore_errors=True)


def _explore_answers_and_stops(arguments: list[str], tmp_path, environment: dict) -> None:
    port = free_port()
    server = subprocess.Popen(
        [*PNEUMO, *arguments, "--port", str(port), "--no-browser", "--log", str(tmp_path / "explorer.log")],
        cwd=PROJECT_ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "terminal.txt").open("w"),
        text=True,
        start_new_session=True,
    )
    try:
        first = server.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in first, first

        def page():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=60) as answer:
                    return answer.status == 200 and answer.read()
            except OSError:
                return None

        assert b"voila" in wait_for(page, 180, "the explorer's page").lower()
        family = serve.descendants(server.pid)
    finally:
        serve.stop_tree(server, grace=60)  # SIGTERM first: pneumo explore stops Voilà and its kernels
    assert server.returncode == 0, (tmp_path / "terminal.txt").read_text()[-2000:]
    assert not [member for member in family if member.is_running()]
