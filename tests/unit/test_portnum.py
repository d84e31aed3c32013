"""Port numbers: the O(log n) allocator gives exactly the numbers of the plain rule (smallest
number neither used nor reserved for another device; a device's kernel number kept)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from fwsg.portnum import PortNumbers


class Reference:
    """The rule, written the obvious (quadratic) way."""

    def __init__(self, reserved):
        self.ids, self.reserved = {}, dict(reserved)

    def assign(self, dev):
        if dev in self.ids:
            return self.ids[dev]
        used = set(self.ids.values())
        n = self.reserved.get(dev)
        if n is None or n in used:
            other = {v for d, v in self.reserved.items() if d != dev}
            n = 1
            while n in used or n in other:
                n += 1
        self.ids[dev] = n
        return n

    def release(self, dev, drop_reservation=False):
        self.ids.pop(dev, None)
        if drop_reservation:
            self.reserved.pop(dev, None)

    def keep_reserved(self, devices):
        self.reserved = {d: n for d, n in self.reserved.items() if d in devices}


DEVS = [f"tap{i}" for i in range(12)]
OPS = st.lists(st.one_of(
    st.tuples(st.just("assign"), st.sampled_from(DEVS)),
    st.tuples(st.just("release"), st.sampled_from(DEVS), st.booleans()),
    st.tuples(st.just("keep"), st.sets(st.sampled_from(DEVS)))), max_size=60)


@settings(max_examples=300, deadline=None)
@given(reserved=st.dictionaries(st.sampled_from(DEVS), st.integers(1, 15), max_size=6), ops=OPS)
def test_same_numbers_as_the_plain_rule(reserved, ops):
    fast, ref = PortNumbers(reserved), Reference(reserved)
    for op in ops:
        if op[0] == "assign":
            assert fast.assign(op[1]) == ref.assign(op[1])
        elif op[0] == "release":
            fast.release(op[1], op[2])
            ref.release(op[1], op[2])
        else:
            fast.keep_reserved(op[1])
            ref.keep_reserved(op[1])
        assert fast.ids == ref.ids
    assert len(set(fast.ids.values())) == len(fast.ids)


def test_many_ports_numbered_densely():
    pn = PortNumbers()
    assert [pn.assign(f"t{i}") for i in range(8000)] == list(range(1, 8001))
    pn.release("t10", drop_reservation=True)
    assert pn.assign("new") == 11
