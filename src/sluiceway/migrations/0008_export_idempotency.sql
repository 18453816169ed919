-- An export request sent again with the same Idempotency-Key (a client retry) finds the job
-- the first one made, even when both arrive at once: one job per owner and key.
-- depends: 0007_exports

CREATE UNIQUE INDEX analysis_runs_idempotency_idx
    ON dsa_jobs.analysis_runs (owner, (run_parameters->>'idempotency_key'))
    WHERE run_parameters ? 'idempotency_key';
