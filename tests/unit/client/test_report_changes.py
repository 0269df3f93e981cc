"""When a held report request is answered early (client/status.py changed_enough), and
which change tokens a report may carry back into a request line."""

from __future__ import annotations

import json

from client.status import change_token, changed_enough, parse_distlb_status


def test_small_moves_wait_and_the_rest_answer() -> None:
    token = change_token(4, True, "r1")
    assert not changed_enough(token, 16, 4, True, "r1")
    assert not changed_enough(token, 16, 5, True, "r1")  # less than an eighth of 16
    assert changed_enough(token, 16, 6, True, "r1")
    assert changed_enough(token, 16, 2, True, "r1")
    assert changed_enough(token, 16, 4, False, "r1")  # stopped accepting
    assert changed_enough(token, 16, 4, True, "r2")  # its compilers changed


def test_full_and_no_longer_full_always_answer() -> None:
    assert changed_enough(change_token(15, True, "r"), 16, 16, True, "r")
    assert changed_enough(change_token(16, True, "r"), 16, 15, True, "r")
    assert changed_enough(change_token(0, True, "r"), 2, 1, True, "r")  # small: every move


def test_an_unreadable_token_answers_at_once() -> None:
    for token in ("", "x", "1", "a.1.r"):
        assert changed_enough(token, 16, 4, True, "r")


def test_only_plain_tokens_are_taken_from_a_report() -> None:
    body = b'{"slots": 2, "busy": 0, "change": "0.1.ab12"}'
    assert parse_distlb_status(body).change == "0.1.ab12"
    for hostile in ('"0.1 HTTP/1.1\\r\\nX: y"', '"' + "1" * 200 + '"', "7", "null"):
        body = b'{"slots": 2, "busy": 0, "change": %s}' % hostile.encode()
        assert parse_distlb_status(body).change == ""


def test_a_balancer_asks_against_what_it_believes_now() -> None:
    # The report said 1 busy while a probe of ours ran; the probe ended and someone
    # else's job took the slot: the server's count is 1 again, which is news to us.
    from client.status import expecting

    said = change_token(1, True, "r")
    believed = expecting(said, 0)  # others 1 - ours then 1 + ours now 0
    assert believed == change_token(0, True, "r")
    assert changed_enough(believed, 1, 1, True, "r")
    assert not changed_enough(said, 1, 1, True, "r")  # (what asking with its token missed)
    assert expecting("garbage", 3) == "garbage"


def test_a_report_that_is_not_an_object_is_a_report_error() -> None:
    import pytest

    from client.status import ReportError

    for body in (b"[1, 2]", b'"x"', b"7"):
        with pytest.raises(ReportError):
            parse_distlb_status(body)


def test_a_report_names_its_slot_holders_within_bounds() -> None:
    def holders(value: object, slots: int = 2) -> object:
        body = json.dumps({"slots": slots, "busy": 1, "holders": value}).encode()
        return parse_distlb_status(body).holders

    assert holders(["127.0.0.1:4001", "[::1]:4002"]) == ("127.0.0.1:4001", "[::1]:4002")
    assert holders([]) == ()
    # More holders than slots, a non-string or an address too long: not said at all.
    assert holders(["a:1", "b:2", "c:3"]) is None
    assert holders([4001]) is None
    assert holders(["x" * 65]) is None
    assert holders("127.0.0.1:4001") is None
    assert parse_distlb_status(b'{"slots": 2, "busy": 0}').holders is None
