-- Batches the delivery ledger says were replaced by a corrected redelivery (superseded_by set).
-- Their rows stay in raw, staging and quarantine (row conservation), but never reach the
-- integrated layer.
select distinct dept, dataset, batch_id, superseded_by
from {{ glx_ledger_relation() }}
where superseded_by is not null
