"""The deliberate bugs of issue 21's audit, one per promise, as exact edits of the source.

mutmut changes one operator or constant at a time; these are the bugs a person would make in the
design (a transaction per request, an answer before the COMMIT, a setting never passed on), which
no single-token mutation expresses. Each names the tests that must fail with it. An edit whose
``old`` text is no longer in the file fails the run: the code moved on, so the bug must be
written again against it, never silently skipped.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Edit:
    path: str
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Bug:
    promise: str
    bug: str
    edits: tuple[Edit, ...]
    tests: tuple[str, ...]  # pytest node ids; at least one must fail


SQLITE = "aggregator/store/sqlite.py"
WRITER = "aggregator/actors/writer.py"
SERVICE = "aggregator/service.py"
TOTALS = (
    "            cur.execute(ADD_COUNTERS, (total, len(rows), total - len(rows), seq))\n"
    "            cur.executemany(ADD_TOPIC, [(t, *tally) for t, tally in topics.items()])\n"
)
TRANSACTION = (
    '                cur.execute("BEGIN IMMEDIATE")\n'
    "                yield cur\n"
    "                committing = True\n"
    '                cur.execute("COMMIT")\n'
)

BUGS = (
    Bug(
        "group commit: one transaction for many requests",
        "the store commits each request in its own transaction",
        (
            Edit(
                SQLITE,
                "        received_at = utc_text(self._clock())\n",
                "        if len(batches) > 1:\n"
                "            flags: list[list[bool]] = []\n"
                "            for one in batches:\n"
                "                flags += self.commit([one]).stored_flags\n"
                "            return commit_result(flags)\n"
                "        received_at = utc_text(self._clock())\n",
            ),
        ),
        (
            "tests/test_actors.py::test_waiting_requests_are_group_committed",
            "tests/test_store.py::test_one_commit_is_one_transaction_on_disk_whatever_it_holds",
        ),
    ),
    Bug(
        "SIGTERM answers every accepted publish",
        "shutdown stops waiting for in-flight /publish",
        (
            Edit(
                SERVICE,
                "with trio.move_on_after(config.shutdown_grace_seconds):\n"
                "                if reads is not None:",
                "with trio.move_on_after(0):\n                if reads is not None:",
            ),
            Edit(
                SERVICE,
                "with trio.move_on_after(ANSWER_MARGIN_SECONDS):\n"
                "                await front.intake.wait_answered()",
                "pass",
            ),
        ),
        ("tests/test_process.py::test_sigterm_answers_every_publish_in_flight",),
    ),
    Bug(
        "ack only after COMMIT",
        "the writer replies before it commits",
        (
            Edit(
                WRITER,
                "            result = await trio.to_thread.run_sync(store.commit, ",
                "            for early in batch:\n"
                "                _reply(early, Accepted(len(early.events), len(early.events), 0))\n"
                "            result = await trio.to_thread.run_sync(store.commit, ",
            ),
            Edit(
                WRITER,
                "        _reply(request, Accepted(stored + duplicates, stored, duplicates, flags))",
                "        pass",
            ),
        ),
        ("tests/test_actors.py::test_a_request_is_answered_only_once_its_commit_is_visible",),
    ),
    Bug(
        "ack only after COMMIT",
        "the store returns before its COMMIT (run at its next call)",
        (
            Edit(
                SQLITE,
                TRANSACTION,
                "                if self._conn.in_transaction:\n"
                '                    cur.execute("COMMIT")\n'
                '                cur.execute("BEGIN IMMEDIATE")\n'
                "                yield cur\n"
                "                committing = True\n",
            ),
        ),
        ("tests/test_actors.py::test_a_request_is_answered_only_once_its_commit_is_visible",),
    ),
    Bug(
        "counters in the same transaction",
        "counters updated after COMMIT",
        (
            Edit(
                SQLITE,
                TOTALS + "        for h, seq in keys:",
                "        cur = self._conn.cursor()  # autocommit: each statement on its own\n"
                + TOTALS.replace("            ", "        ")
                + "        for h, seq in keys:",
            ),
        ),
        (
            "tests/test_store.py::test_a_failure_while_counting_undoes_the_events_too",
            "tests/test_store.py::test_one_commit_is_one_transaction_on_disk_whatever_it_holds",
        ),
    ),
    Bug(
        "every setting is read",
        "the service ignores AGGREGATOR_QUEUE_SIZE (a fixed queue of 128)",
        (
            Edit(
                SERVICE,
                "trio.open_memory_channel[Submission](config.queue_size)",
                "trio.open_memory_channel[Submission](128)",
            ),
        ),
        ("tests/test_settings.py::test_a_setting_changes_what_its_owner_does[queue_size]",),
    ),
    Bug(
        "every setting is read",
        "the environment's AGGREGATOR_QUEUE_SIZE is not read",
        (
            Edit(
                "aggregator/settings.py",
                "        elif env in environ:",
                '        elif env in environ and name != "queue_size":',
            ),
        ),
        ("tests/test_config.py::test_every_setting_has_a_flag_and_an_environment_variable",),
    ),
    Bug(
        "the first copy wins; a duplicate changes nothing",
        "a later copy replaces the stored payload",
        (
            Edit(
                SQLITE,
                "                first.pop(key, None)\n",
                "                later = first.pop(key, None)\n"
                "                if later is not None:\n"
                "                    cur.execute(\n"
                '                        "UPDATE events SET payload = ?"\n'
                '                        " WHERE topic = ? AND event_id = ?",\n'
                "                        (later.payload, *key),\n"
                "                    )\n",
            ),
        ),
        (
            "tests/test_store.py::test_commit_dedups_within_and_across_batches_first_copy_wins",
            "tests/test_process.py::test_sigterm_under_load_drains_and_exits_0",
        ),
    ),
    Bug(
        "reads do not wait behind publishing (issue 15)",
        "the server never hands a connection to the read process",
        (
            Edit(
                "aggregator/front/readside.py",
                "if not self._end.send_now(CONNECTION, handed(served, data), sock.fileno()):",
                "if True:",
            ),
        ),
        ("tests/test_reads.py::test_reads_are_answered_while_the_server_process_is_stopped",),
    ),
    Bug(
        "a connection moves between the processes with nothing lost",
        "the read process hands a connection back without the bytes it read of it",
        (
            Edit(
                "aggregator/reads.py",
                "await self._end.send(CONNECTION, handed(*rest), sock.fileno())",
                'await self._end.send(CONNECTION, handed(rest[0], b""), sock.fileno())',
            ),
        ),
        (
            "tests/test_reads.py::"
            "test_a_pipelined_mix_is_answered_in_order_in_one_write_and_byte_by_byte",
        ),
    ),
    Bug(
        "no connection is served more than keep_alive_max_requests requests, in either process",
        "the server begins the count again for a connection the read process hands back",
        (
            Edit(
                "aggregator/front/server.py",
                "protocol.keep_alive_requests = self._served",
                "protocol.keep_alive_requests = 0",
            ),
        ),
        (
            "tests/test_reads.py::"
            "test_a_connection_closes_after_as_many_requests_as_on_the_servers_own_front",
        ),
    ),
    Bug(
        "the read process answers as the server's front",
        "it closes a connection whose client ended its stream inside a head",
        (
            Edit(
                "aggregator/reads.py",
                "return (served, bytes(buffer)) if buffer else None",
                "return None",
            ),
        ),
        (
            "tests/test_reads.py::"
            "test_a_client_that_half_closes_in_a_head_is_answered_as_by_the_servers_own_front",
        ),
    ),
    Bug(
        "the read process runs with short time slices",
        "it never asks for them",
        (
            Edit(
                "aggregator/reads.py",
                "    refused = ask_for_short_slices()",
                "    refused = None",
            ),
        ),
        (
            "tests/test_reads.py::"
            "test_the_read_process_and_all_its_threads_run_with_short_time_slices",
        ),
    ),
    Bug(
        "the bare read route answers as the Quart route does",
        "of a name given twice it takes the last value, where request.args takes the first",
        (
            Edit(
                "aggregator/front/readroute.py",
                "        args.setdefault(name, value)",
                "        args[name] = value",
            ),
        ),
        ("tests/test_readroute.py::test_every_query_string_is_answered_as_quart_answers_it",),
    ),
    Bug(
        "a client that half-closes after whole requests gets every answer",
        "the end of its stream is told to the route under way at once (Quart cancels it)",
        (
            Edit(
                "aggregator/front/server.py",
                "                if _owes_an_answer(protocol):",
                "                if False:",
            ),
        ),
        (
            "tests/test_connections.py::"
            "test_a_client_that_half_closes_after_its_requests_gets_every_answer",
        ),
    ),
)
