"""DeviceSpec: TensorFlow's device_spec_test expectations (the immutable V2 class), and errors."""

from __future__ import annotations

import pytest
import tensorwire as tw
from tensorwire.cluster import DeviceSpec


def test_top_level_name_is_this_class():
    assert tw.DeviceSpec is DeviceSpec


def test_empty():
    d = DeviceSpec()
    assert d.to_string() == ""
    assert d.parse_from_string("").to_string() == ""
    assert DeviceSpec.from_string(None).to_string() == ""


def test_constructor():
    d = DeviceSpec(job="j", replica=0, task=1, device_type="CPU", device_index=2)
    assert (d.job, d.replica, d.task, d.device_type, d.device_index) == ("j", 0, 1, "CPU", 2)
    assert d.to_string() == "/job:j/replica:0/task:1/device:CPU:2"
    assert DeviceSpec(device_type="GPU", device_index=0).to_string() == "/device:GPU:0"


def test_replace():
    d = DeviceSpec().replace(job="foo")
    assert d.to_string() == "/job:foo"
    d = d.replace(task=3)
    assert d.to_string() == "/job:foo/task:3"
    d = d.replace(device_type="CPU", device_index=0)
    assert d.to_string() == "/job:foo/task:3/device:CPU:0"
    d = d.replace(task=None, replica=12)
    assert d.to_string() == "/job:foo/replica:12/device:CPU:0"
    d = d.replace(device_type="GPU", device_index=2)
    assert d.to_string() == "/job:foo/replica:12/device:GPU:2"
    d = d.replace(device_type="CPU", device_index=1)
    assert d.to_string() == "/job:foo/replica:12/device:CPU:1"
    d = d.replace(device_type=None, device_index=None)
    assert d.to_string() == "/job:foo/replica:12"


def test_replace_leaves_the_original_unchanged_and_rejects_unknown_keywords():
    d = DeviceSpec(job="a")
    d.replace(job="b")
    assert d.job == "a"
    with pytest.raises(TypeError, match="device"):
        d.replace(device="GPU")


def test_to_string():
    assert DeviceSpec(job="foo").to_string() == "/job:foo"
    assert DeviceSpec(job="foo", task=3).to_string() == "/job:foo/task:3"
    assert DeviceSpec(job="foo", task=3, device_type="cpu", device_index=0).to_string() == (
        "/job:foo/task:3/device:CPU:0"
    )
    assert DeviceSpec(job="foo", replica=12, device_type="cpu", device_index=0).to_string() == (
        "/job:foo/replica:12/device:CPU:0"
    )
    assert DeviceSpec(job="foo", replica=12, device_type="gpu", device_index=2).to_string() == (
        "/job:foo/replica:12/device:GPU:2"
    )
    assert DeviceSpec(job="foo", replica=12).to_string() == "/job:foo/replica:12"
    # A device type without index is the wildcard.
    assert DeviceSpec(job="foo", replica=12, task=3, device_type="GPU").to_string() == (
        "/job:foo/replica:12/task:3/device:GPU:*"
    )


def test_to_from_string():
    d = DeviceSpec.from_string("/job:foo/replica:0")
    assert d.to_string() == "/job:foo/replica:0"
    assert d.replica == 0

    d = DeviceSpec.from_string("/replica:1/task:0/cpu:0")
    assert d.to_string() == "/replica:1/task:0/device:CPU:0"
    assert [d.replica, d.task, d.device_type, d.device_index] == [1, 0, "CPU", 0]

    d = DeviceSpec.from_string("/replica:1/task:0/device:CPU:0")
    assert d.to_string() == "/replica:1/task:0/device:CPU:0"
    assert [d.replica, d.task, d.device_type, d.device_index] == [1, 0, "CPU", 0]

    d = DeviceSpec.from_string("/job:muu/device:GPU:2")
    assert d.to_string() == "/job:muu/device:GPU:2"
    assert [d.job, d.device_type, d.device_index] == ["muu", "GPU", 2]

    with pytest.raises(ValueError, match="Multiple device types are not allowed"):
        d.parse_from_string("/job:muu/device:GPU:2/cpu:0")


def test_parse_from_string_returns_a_new_spec():
    d = DeviceSpec.from_string("/job:a")
    other = d.parse_from_string("/job:b")
    assert (d.job, other.job) == ("a", "b")


def test_combine():
    d = DeviceSpec.from_string("/job:foo/replica:0")
    d = d.make_merged_spec(DeviceSpec.from_string("/task:1/device:GPU:2"))
    assert d.to_string() == "/job:foo/replica:0/task:1/device:GPU:2"

    d = DeviceSpec().make_merged_spec(DeviceSpec.from_string("/task:1/cpu:0"))
    assert d.to_string() == "/task:1/device:CPU:0"
    d = d.make_merged_spec(DeviceSpec.from_string("/job:boo/device:GPU:0"))
    assert d.to_string() == "/job:boo/task:1/device:GPU:0"
    d = d.make_merged_spec(DeviceSpec.from_string("/job:muu/cpu:2"))
    assert d.to_string() == "/job:muu/task:1/device:CPU:2"
    d = d.make_merged_spec(DeviceSpec.from_string("/job:muu/device:MyFunnyDevice:2"))
    assert d.to_string() == "/job:muu/task:1/device:MyFunnyDevice:2"


def test_merge_is_make_merged_spec():
    base = DeviceSpec.from_string("/job:ps/task:0")
    assert base.merge(DeviceSpec(device_type="CPU", device_index=0)).to_string() == (
        "/job:ps/task:0/device:CPU:0"
    )


def test_merge_removed_from_the_immutable_class():
    with pytest.raises(AttributeError):
        DeviceSpec().merge_from(DeviceSpec.from_string("/task:1/cpu:0"))


def test_immutable():
    d = DeviceSpec(job="a")
    with pytest.raises(AttributeError):
        d.job = "b"


# ------------------------------------------------------------ the short task forms


@pytest.mark.parametrize(
    ("name", "job", "task"),
    [("/job:ps/task:0", "ps", 0), ("/job:worker/task:12", "worker", 12), ("/job:x", "x", None)],
)
def test_short_task_names(name, job, task):
    d = DeviceSpec.from_string(name)
    assert (d.job, d.task, d.replica, d.device_type) == (job, task, None, None)
    assert d.to_string() == name


@pytest.mark.parametrize(
    ("name", "device_type", "index"),
    [
        ("/cpu:0", "CPU", 0),
        ("/GPU:1", "GPU", 1),
        ("/gpu:*", "GPU", None),
        ("/CPU", "CPU", None),
        ("/device:CPU:*", "CPU", None),
        ("/tpu:3", "TPU", 3),
    ],
)
def test_legacy_and_wildcard_device_forms(name, device_type, index):
    d = DeviceSpec.from_string(name)
    assert (d.device_type, d.device_index) == (device_type, index)


# ------------------------------------------------------------ equality, hashing, repr


def test_equality_and_hash_follow_the_string():
    a = DeviceSpec.from_string("/job:ps/task:0/cpu:0")
    b = DeviceSpec(job="ps", task=0, device_type="CPU", device_index=0)
    assert a == b and hash(a) == hash(b)
    assert len({a, b}) == 1
    assert a != DeviceSpec.from_string("/job:ps/task:1/cpu:0")
    assert a != "/job:ps/task:0/device:CPU:0"  # a string is not a DeviceSpec


def test_repr_and_str():
    d = DeviceSpec.from_string("/job:ps/task:0")
    assert repr(d) == (
        "<DeviceSpec(job=ps, replica=None, task=0, device_type=None, device_index=None)>"
    )
    assert str(d) == "/job:ps/task:0"


# ------------------------------------------------------------ bad names


def test_unknown_attribute_message_is_tensorflows():
    with pytest.raises(ValueError) as info:
        DeviceSpec.from_string("/job:ps/tsk:0")
    assert str(info.value) == (
        "Unknown attribute 'tsk' is encountered while parsing the device spec: '/job:ps/tsk:0'."
    )


@pytest.mark.parametrize("name", ["/job:ps/task:x", "/replica:one", "/device:CPU:zero", "/cpu:a"])
def test_non_integer_index_is_a_value_error_naming_the_spec(name):
    with pytest.raises(ValueError, match="while parsing the device spec") as info:
        DeviceSpec.from_string(name)
    assert name in str(info.value)


def test_two_device_types():
    with pytest.raises(ValueError, match="Multiple device types are not allowed"):
        DeviceSpec.from_string("/cpu:0/gpu:0")


def test_bad_constructor_index():
    with pytest.raises(ValueError, match="task must be an integer"):
        DeviceSpec(task="abc")


def test_non_string_spec_is_a_type_error():
    with pytest.raises(TypeError, match="must be a string"):
        DeviceSpec.from_string(3)
