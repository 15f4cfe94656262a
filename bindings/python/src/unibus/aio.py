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
"""

import asyncio
import contextlib
import typing

from ._native.unibus import RoomUpdate, Session, WatchEnd, WatchListener

_CLOSED = object()


class UpdateStream:
    """The async iterator of :func:`updates`."""

    def __init__(self) -> None:
        self.end: typing.Optional[WatchEnd] = None
        self.errors: typing.List[str] = []
        self._queue: "asyncio.Queue[object]" = asyncio.Queue()
        self._loop = asyncio.get_running_loop()

    def _put(self, item: object) -> None:
        # Called from an SDK thread: hand the item to the event loop's thread.
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:
            pass  # the loop is closed; nobody is listening any more

    def __aiter__(self) -> "UpdateStream":
        return self

    async def __anext__(self) -> RoomUpdate:
        item = await self._queue.get()
        if item is _CLOSED:
            self._queue.put_nowait(_CLOSED)  # later calls end too
            raise StopAsyncIteration
        return typing.cast(RoomUpdate, item)


class _Listener(WatchListener):
    def __init__(self, stream: UpdateStream) -> None:
        self._stream = stream

    def on_update(self, update: RoomUpdate) -> None:
        self._stream._put(update)

    def on_error(self, message: str) -> None:
        self._stream.errors.append(message)

    def on_close(self, end: WatchEnd) -> None:
        self._stream.end = end
        self._stream._put(_CLOSED)


@contextlib.asynccontextmanager
async def updates(
    session: Session, messages: bool = False
) -> typing.AsyncIterator[UpdateStream]:
    """Watches ``session`` for the block's duration; cancels the watch on leaving it. With
    ``messages``, the messages of the session's rooms are delivered too."""
    stream = UpdateStream()
    handle = await session.watch(_Listener(stream), messages)
    try:
        yield stream
    finally:
        handle.cancel()
