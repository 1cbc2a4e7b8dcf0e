"""The CPU launcher's refusals, before fairseq parses anything. (The console scripts
themselves run in tests/test_end_to_end.py: ofasys-train resumes a run, ofasys-hydra-train
runs a config and ofasys-generate decodes, each from a directory that knows nothing of
the repository; ofasys-train-cpu trains in tests/tasks/test_multitask_training.py.)"""
import pytest

from ofasys_fairseq import distributed_cpu


@pytest.mark.parametrize("args, message", [
    (["--nprocs", "0"], "ofasys-train-cpu: --nprocs must be at least 1"),
    (["--ddp-backend", "c10d"], "ofasys-train-cpu sets --ddp-backend legacy_ddp itself"),
    (["--ddp-backend=pytorch_ddp"], "leave the option out"),
])
def test_cpu_launcher_refuses_what_it_cannot_run(args, message):
    # in process: the refusals come before fairseq parses anything (the console script
    # itself runs in test_two_cpu_processes_match_one_process_*)
    with pytest.raises(SystemExit) as refused:
        distributed_cpu.main([*args, "--task", "instruction"])
    assert message in str(refused.value.code)
