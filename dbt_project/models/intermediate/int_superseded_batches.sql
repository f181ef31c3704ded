-- Batches the delivery ledger says were replaced by a corrected redelivery (superseded_by set).
-- Their rows stay in raw, staging and quarantine (row conservation), but never reach the
-- integrated layer.
-- Its post-hook creates the bookkeeping tables of the incremental int models (docs/adr/0010).
{{ config(post_hook="{{ glx_incremental_bookkeeping() }}") }}
select distinct dept, dataset, batch_id, superseded_by
from {{ glx_ledger_relation() }}
where superseded_by is not null
