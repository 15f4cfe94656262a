"""asyncio helpers over the generated API.

``Session.watch`` delivers updates to a listener on an SDK thread; :func:`updates` turns that
into an async iterator on the running event loop::

    async with unibus.aio.updates(session) as stream:
        async for update in stream:
            print(update)

With ``messages=True`` the rooms' messages come through it too, as ``RoomUpdate.MESSAGE``
(first those after the last one delivered, then each new one)::

    async with unibus.aio.updates(session, messages=True) as stream:
        async for update in stream:
            if update.is_message():
                print(update.message.message.body)

The iterator ends when the watch closes (the session ended, or the ``async with`` block was
left, which cancels the watch); ``stream.end`` then says why. A notification that could not be
read is skipped, and its message kept in ``stream.errors``.

Messages are delivered at least once: one counts as handled when the loop asks for the next
update (or leaves the block after the loop got it), and only then is its place written to the
trust file. A process that dies while handling a message gets it again after a restart. A wait
for the next update may be given up (a timeout of ``asyncio.wait_for``) and started again: an
update the given-up wait was about to return comes from the next wait, so none is lost; and if
the block is left instead, its message comes again to the next watch.
"""

import contextlib
import typing

from ._native.unibus import RoomUpdate, Session, WatchEnd, WatchEvent, WatchStream


class UpdateStream:
    """The async iterator of :func:`updates`, over the SDK's ``WatchStream``."""

    def __init__(self, stream: WatchStream) -> None:
        self.end: typing.Optional[WatchEnd] = None
        self.errors: typing.List[str] = []
        self._stream = stream
        # The ``seq`` of the last step this iterator got from the stream; 0 before the first.
        self._received = 0

    def __aiter__(self) -> "UpdateStream":
        return self

    async def __anext__(self) -> RoomUpdate:
        while True:
            step = await self._stream.next(self._received)
            self._received = step.seq
            event = step.event
            if event.is_update():
                return event.update
            if event.is_error():
                self.errors.append(event.message)
                continue
            self.end = event.end
            raise StopAsyncIteration

    def cancel(self) -> None:
        """Stops the watch; the iteration ends. The SDK gets the number of the last step this
        iterator got, so an update a given-up wait was about to return does not count as
        handled: its message comes again to the next watch."""
        self._stream.cancel(self._received)


@contextlib.asynccontextmanager
async def updates(
    session: Session, messages: bool = False
) -> typing.AsyncIterator[UpdateStream]:
    """Watches ``session`` for the block's duration; cancels the watch on leaving it. With
    ``messages``, the messages of the session's rooms are delivered too."""
    stream = UpdateStream(await session.watch_stream(messages))
    try:
        yield stream
    finally:
        stream.cancel()
