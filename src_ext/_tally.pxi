# Per-worker request tallies for the metrics (counts by status, two latency histograms). Mirrors
# fastgw/_py/tally.py; keep the two in step.
#
# PERF: a request adds to C counters here; fastgw/metrics.py copies them into prometheus-client's
# shared files once a second. Doing the same with Python floats and dicts cost about 8k
# instructions per request.

cdef enum:
    FIRST_STATUS = 100  # MAX_BUCKETS and STATUS_SLOTS (100..599): fastgw/_core.pxd


@cython.final
cdef class Tally:
    # its fields: fastgw/_core.pxd

    def __init__(self, tuple labels, tuple bounds):
        cdef Py_ssize_t i
        if len(bounds) > MAX_BUCKETS:
            raise ValueError(f"at most {MAX_BUCKETS} buckets")
        self.labels = labels
        self.nbounds = <int>len(bounds)
        for i in range(self.nbounds):
            self.bounds[i] = bounds[i]
        self._clear()

    cdef void _clear(self):
        cdef int i
        for i in range(MAX_BUCKETS + 1):
            self.durations[i] = 0
            self.integrations[i] = 0
        self.duration_sum = 0.0
        self.integration_sum = 0.0
        self.integration_count = 0
        for i in range(STATUS_SLOTS):
            self.statuses[i] = 0

    cdef int _bucket(self, double value):
        # le semantics: the first bucket whose bound is >= value (bisect_left)
        cdef int i
        for i in range(self.nbounds):
            if value <= self.bounds[i]:
                return i
        return self.nbounds

    cpdef record(self, int status, double elapsed, double integration):
        """One request: its status, its latency, and its integration latency (< 0: none)."""
        if status < FIRST_STATUS or status >= FIRST_STATUS + STATUS_SLOTS:
            status = 599  # not an HTTP status: counted as a server error
        self.statuses[status - FIRST_STATUS] += 1
        self.durations[self._bucket(elapsed)] += 1
        self.duration_sum += elapsed
        if integration >= 0:
            self.integrations[self._bucket(integration)] += 1
            self.integration_sum += integration
            self.integration_count += 1

    cpdef tuple drain(self):
        """(statuses, durations, integrations) since the last drain, then start again. The two
        histograms are [count per bucket..., +Inf, sum]; integrations is None when there were none."""
        cdef int i
        cdef list durations = [self.durations[i] for i in range(self.nbounds + 1)]
        durations.append(self.duration_sum)
        cdef list integrations = None
        if self.integration_count:
            integrations = [self.integrations[i] for i in range(self.nbounds + 1)]
            integrations.append(self.integration_sum)
        cdef dict statuses = {}
        for i in range(STATUS_SLOTS):
            if self.statuses[i]:
                statuses[i + FIRST_STATUS] = self.statuses[i]
        self._clear()
        return statuses, durations, integrations
