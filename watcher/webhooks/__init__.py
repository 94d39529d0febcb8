"""Webhooks: events from the outbox delivered to the merchant's endpoints.

* ``payload``  the wire format of one event (webhooks and the feed send the same JSON)
* ``signing``  ``whsec_`` secrets and the Standard Webhooks headers of one attempt
* ``schedule`` the retry schedule (``WATCHER_WEBHOOK_RETRY_SCHEDULE``) as data
* ``netguard`` where a webhook may go (every URL and every connection judged)
* ``netstream``, ``netpool`` the client's connections and its keep-alive pool
* ``worker``   the delivery loop every daemon runs (claims with ``FOR UPDATE SKIP LOCKED``)
* ``record``   its outcomes written in batches, one statement each

docs/webhooks.md is the receiver's side of the same contract.
"""
