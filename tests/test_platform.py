"""A connector for another platform is refused at `ggic run`; GPUAcceleration=GPU without a GPU fails or, opted in,
falls back to the CPU."""

from __future__ import annotations

import json
import platform

import pytest

from bench.harness import GGICRuntime, connector_entry, ggic
from connector.devices.platforms import PlatformMismatchError, check_connector_platforms, machine_platform
from connector.image_classification.errors import AcceleratorUnavailableError
from connector.image_classification.model import select_context

CONNECTOR_PLATFORM = {"x86_64": "x86-64", "armv7l": "ARMv7", "aarch64": "Aarch64JTX2"}
HERE = machine_platform()
OTHER = "ARMv7" if HERE != "armv7l" else "x86-64"


def no_usable_gpu() -> bool:
    import mxnet as mx

    return not (mx.runtime.Features().is_enabled("CUDA") and mx.context.num_gpus() > 0)


@pytest.mark.parametrize("machine, bits, expected", [
    ("x86_64", 64, "x86_64"), ("AMD64", 64, "x86_64"), ("armv7l", 32, "armv7l"), ("aarch64", 64, "aarch64"),
    ("aarch64", 32, "armv7l"),  # Raspberry Pi OS 32-bit on a 64-bit kernel
    ("riscv64", 64, None), ("i686", 32, None),
])
def test_machine_names_map_to_connector_platforms(machine, bits, expected):
    assert machine_platform(machine, bits) == expected


def test_the_check_names_every_mismatched_connector_and_the_way_out():
    connectors = [("a", "ImageClassificationARMv7", "armv7l"), ("b", "ImageClassificationx86-64", "x86_64"),
                  ("c", "ImageClassificationAarch64JTX2", "aarch64")]
    with pytest.raises(PlatformMismatchError) as error:
        check_connector_platforms(connectors, machine="x86_64", environ={})
    message = str(error.value)
    assert "connector 'a' is ImageClassificationARMv7, built for armv7l, but this machine is x86_64" in message
    assert "connector 'c'" in message and "connector 'b'" not in message
    assert "ImageClassificationx86-64/versions/2" in message and "--allow-platform-mismatch" in message
    warnings = check_connector_platforms(connectors, machine="x86_64", environ={"GGIC_ALLOW_PLATFORM_MISMATCH": "1"})
    assert len(warnings) == 2 and "overridden" in warnings[0]
    assert check_connector_platforms(connectors[1:2], machine="x86_64", environ={}) == []


@pytest.mark.skipif(HERE is None, reason="no connector exists for this machine")
def test_run_refuses_a_connector_for_another_platform_before_starting_anything(tmp_path, digits_model):
    state = tmp_path / "state"
    created = ggic("create-connector-definition", "--state-dir", str(state), "--name", "other",
                   "--initial-version", json.dumps({"Connectors": [connector_entry(digits_model, platform=OTHER)]}))
    assert created.returncode == 0, created.stderr.decode()  # the cloud side does not know the device
    result = ggic("run", "--state-dir", str(state), "--connector-definition", "other", "--port", "0")
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert f"is ImageClassification{OTHER}, built for" in stderr
    assert f"but this machine is {platform.machine()}" in stderr
    assert "--allow-platform-mismatch" in stderr and "GGIC_ALLOW_PLATFORM_MISMATCH=1" in stderr
    assert not (state / "runtime.json").exists() and not (state / "env").exists()


@pytest.mark.skipif(HERE is None, reason="no connector exists for this machine")
def test_the_override_env_var_runs_it_with_a_warning(tmp_path, digits_model):
    entry = connector_entry(digits_model, platform=OTHER)
    with GGICRuntime(tmp_path / "state", [entry], extra_env={"GGIC_ALLOW_PLATFORM_MISMATCH": "1"}) as rt:
        assert "runs on this" in rt.output() and "platform check is overridden" in rt.output()


def test_a_gpu_request_without_a_gpu_is_refused_and_a_bad_fallback_named():
    import mxnet as mx

    if not no_usable_gpu():
        pytest.skip("this machine has a usable GPU")
    with pytest.raises(AcceleratorUnavailableError, match="GGIC_GPU_FALLBACK=cpu falls back"):
        select_context(mx, "GPU", environ={})
    with pytest.raises(AcceleratorUnavailableError, match="GGIC_GPU_FALLBACK='yes' is not understood"):
        select_context(mx, "GPU", environ={"GGIC_GPU_FALLBACK": "yes"})
    assert select_context(mx, "CPU", environ={}) == mx.cpu()


def test_gpu_fallback_to_cpu_serves_and_says_so(tmp_path, digits_model, sdk_env):
    if not no_usable_gpu():
        pytest.skip("this machine has a usable GPU: nothing to fall back from")
    entry = connector_entry(digits_model, platform="Aarch64JTX2", GPUAcceleration="GPU", service_name="fallback")
    with GGICRuntime(tmp_path / "state", [entry], run_args=["--allow-platform-mismatch"],
                     extra_env={"GGIC_GPU_FALLBACK": "cpu"}) as rt:
        sdk_env(rt)
        import greengrass_machine_learning_sdk as ml
        from sklearn.datasets import load_digits

        from examples.models.digits import digit_png

        response = ml.client("inference").invoke_inference_service(
            AlgoType="image-classification", ServiceName="fallback", ContentType="image/png",
            Body=digit_png(load_digits().images[0]))
        assert response["Body"].read().decode().count(",") == 9
        log = rt.log_of("GG-ML-INF-image-classification-fallback")
        assert "serving on the CPU because GGIC_GPU_FALLBACK=cpu" in log
        assert "bound on cpu(0)" in log
