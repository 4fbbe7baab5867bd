from gateway.limits import RateBudget, SlidingWindowLimiter, retry_after_header


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_allows_limit_recorded_events_per_window_then_says_how_long_to_wait():
    clock = Clock()
    limiter = SlidingWindowLimiter(3, 60, clock=clock)
    for _ in range(3):
        assert limiter.retry_after("a") == 0.0
        limiter.record("a")
    clock.now += 10
    assert limiter.retry_after("a") == 50.0
    assert limiter.retry_after("b") == 0.0  # keys are counted apart
    clock.now += 50
    assert limiter.retry_after("a") == 0.0  # the oldest event left the window


def test_asking_records_nothing_so_refused_attempts_cannot_lock_anyone_out():
    limiter = SlidingWindowLimiter(1, 10, clock=Clock())
    for _ in range(50):
        assert limiter.retry_after("a") == 0.0
    limiter.record("a")
    assert limiter.retry_after("a") == 10.0


def test_zero_limit_allows_everything():
    limiter = SlidingWindowLimiter(0, 60)
    for _ in range(1000):
        limiter.record("a")
    assert limiter.retry_after("a") == 0.0


def test_idle_keys_are_forgotten_so_memory_stays_bounded():
    clock = Clock()
    limiter = SlidingWindowLimiter(1, 10, clock=clock, max_keys=100)
    for i in range(101):
        limiter.record(str(i))
    clock.now += 11
    limiter.record("new")
    assert len(limiter._events) == 1


def test_acquire_reserves_and_release_gives_back():
    now = [0.0]
    limiter = SlidingWindowLimiter(2, 60, clock=lambda: now[0])
    assert limiter.acquire("k") == 0.0 and limiter.acquire("k") == 0.0
    assert limiter.acquire("k") > 0  # reserved by the first two, before anything they stand for happened
    limiter.release("k")
    assert limiter.acquire("k") == 0.0
    now[0] = 61.0
    assert limiter.acquire("k") == 0.0


def test_zero_limit_never_refuses():
    limiter = SlidingWindowLimiter(0, 60)
    assert all(limiter.acquire("k") == 0.0 for _ in range(1000))


def test_retry_after_is_whole_seconds_rounded_up_and_at_least_one():
    # Waiting what Retry-After says must be enough: 3.4 s left is "4", never "3".
    assert [retry_after_header(w) for w in (3.4, 3.01, 3.0, 0.2, 0.0, 59.5)] == ["4", "4", "3", "1", "1", "60"]


def test_a_rate_budget_allows_one_seconds_worth_at_once_then_refills_at_its_rate():
    clock = Clock()
    budget = RateBudget(50, clock=clock)
    assert budget.available() == 50
    budget.spend(50)
    assert budget.available() == 0  # no time has passed: nothing more
    clock.now += 0.5
    assert budget.available() == 25
    budget.spend(10)
    assert budget.available() == 15  # what was not spent is kept
    clock.now += 3600
    assert budget.available() == 50  # an idle hour saves up one second's worth, no more


def test_a_rate_under_one_a_second_still_allows_one_at_a_time():
    clock = Clock()
    budget = RateBudget(0.25, clock=clock)
    assert budget.available() == 1
    budget.spend(1)
    clock.now += 3.9
    assert budget.available() == 0
    clock.now += 0.1
    assert budget.available() == 1


def test_a_clock_that_steps_back_adds_nothing():
    clock = Clock()
    budget = RateBudget(10, clock=clock)
    budget.spend(10)
    clock.now -= 100
    assert budget.available() == 0
    clock.now += 0.5
    assert budget.available() == 5


def test_a_new_rate_keeps_what_was_earned_up_to_its_burst_and_refills_at_the_new_rate():
    clock = Clock()
    budget = RateBudget(50, clock=clock)
    budget.spend(50)
    clock.now += 0.2  # 10 earned at 50 a second
    budget.set_rate(25)  # (two processes now share 50 a second)
    assert budget.available() == 10
    budget.spend(10)
    clock.now += 1.0
    assert budget.available() == 25  # refilled at 25 a second, up to one second's worth
    budget.set_rate(5)  # a burst of 25 earned is cut to the new second's worth
    assert budget.available() == 5
    budget.spend(5)
    budget.set_rate(0.5)  # under one a second: one at a time, one every 2 s
    clock.now += 1.9
    assert budget.available() == 0
    clock.now += 0.2
    assert budget.available() == 1
