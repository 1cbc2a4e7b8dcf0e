"""Examples and batches are built under a lock that the process takes for good when it exits.

fairseq's ``BufferedIterator`` prefetches batches in a daemon thread. When training stops
(``--max-update`` in the middle of an epoch) the interpreter exits while that thread may be
building the next batch; Python then ends it with ``pthread_exit`` at its next GIL
acquisition, and inside a torch op (decoding, resampling and filterbanks of sounds are) the
unwinding meets ``noexcept`` C++ frames: the process aborts after training has finished
("terminate called without an active exception", exit 134). ``atexit`` hooks run before
that: this one waits for the example or batch being built, then keeps the thread waiting
on the lock, outside torch.
"""
import atexit
import functools
import os
import threading

# a hung read must not hang the exit: past this, exit as before
EXIT_WAIT_SECONDS = 60.0
_BUILDING = threading.RLock()


def built_before_exit(method):
    """Run ``method`` under the lock that exit waits for."""
    @functools.wraps(method)
    def guarded(*args, **kwargs):
        with _BUILDING:
            return method(*args, **kwargs)
    return guarded


@atexit.register
def _wait_for_the_batch_being_built() -> None:
    _BUILDING.acquire(timeout=EXIT_WAIT_SECONDS)


def _fresh_lock() -> None:
    # a process forked while another thread held the lock (a DataLoader worker) would
    # wait for it forever: that thread does not exist there
    global _BUILDING
    _BUILDING = threading.RLock()


os.register_at_fork(after_in_child=_fresh_lock)
