-- Refunds and chargebacks end a subscription's access (docs/stripe.md,
-- "Refunds and disputes").
--
-- A reversal is kept apart from the subscription's status on purpose: the
-- status follows Stripe's newest state (customer.subscription.updated,
-- invoice.payment_succeeded), and those events keep saying "active" for the
-- very period whose money went back. A reversed charge holds access off for
-- the billing period it was anchored to, whatever the status says, until its
-- dispute is won or the subscription is active in a later period.

-- Which payment (PaymentIntent or charge) paid which invoice. Filled from the
-- invoice itself (legacy `charge` / `payment_intent`, newer `payments`), from
-- `invoice_payment.paid` events and from a charge's `invoice`.
CREATE TABLE stripe_invoice_payments (
    invoice_id         text NOT NULL CHECK (invoice_id ~ '^in_'),
    payment_intent_id  text NOT NULL DEFAULT '',  -- '' when unknown (keeps the key simple)
    charge_id          text NOT NULL DEFAULT '',
    created_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (invoice_id, payment_intent_id, charge_id),
    CHECK (payment_intent_id <> '' OR charge_id <> '')
);
CREATE INDEX stripe_invoice_payments_pi_idx ON stripe_invoice_payments (payment_intent_id);
CREATE INDEX stripe_invoice_payments_charge_idx ON stripe_invoice_payments (charge_id);

-- Charges we heard about through a refund or a dispute (not every charge).
CREATE TABLE stripe_charges (
    id                 text        PRIMARY KEY CHECK (id ~ '^[a-z]+_'),  -- ch_, py_
    payment_intent_id  text,
    invoice_id         text,
    subscription_id    text,        -- NULL: not tied to a subscription (yet)
    amount             bigint      CHECK (amount >= 0),  -- NULL until a charge event says
    amount_refunded    bigint      NOT NULL DEFAULT 0 CHECK (amount_refunded >= 0),
    fully_refunded     boolean     NOT NULL DEFAULT false,
    -- the start of the billing period this reversal holds off: the later of the
    -- subscription's period when we tied the charge to it and the invoice's creation
    period_anchor      timestamptz,
    revoked_reason     text        CHECK (revoked_reason IN ('refunded', 'disputed')),
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stripe_charges_subscription_idx ON stripe_charges (subscription_id)
    WHERE revoked_reason IS NOT NULL;
CREATE INDEX stripe_charges_unlinked_idx ON stripe_charges (updated_at)
    WHERE subscription_id IS NULL OR period_anchor IS NULL;

CREATE TABLE stripe_disputes (
    id             text        PRIMARY KEY CHECK (id ~ '^[a-z]+_'),  -- dp_, du_
    charge_id      text        NOT NULL,
    status         text        NOT NULL,
    state_created  timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX stripe_disputes_charge_idx ON stripe_disputes (charge_id);

-- A closed dispute (won, lost, or an inquiry closed without a chargeback) is
-- further along than an open one: a late "created" never reopens it.
CREATE FUNCTION stripe_dispute_rank(status text) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN status IN ('won', 'lost', 'warning_closed') THEN 1 ELSE 0 END
$$;

-- Why a subscription's access is held off by a reversal now (NULL: it is not).
-- A reversal stops holding once the subscription is paying in a later period.
CREATE FUNCTION stripe_reversal(sub_id text, sub_status text, period_start timestamptz)
RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT c.revoked_reason
    FROM stripe_charges c
    WHERE c.subscription_id = sub_id AND c.revoked_reason IS NOT NULL
      AND NOT (sub_status IN ('active', 'trialing') AND c.period_anchor IS NOT NULL
               AND period_start > c.period_anchor)
    ORDER BY c.revoked_reason DESC, c.id
    LIMIT 1
$$;

-- A charge or dispute we could not tie to a subscription is kept as 'unmatched'.
ALTER TABLE stripe_events DROP CONSTRAINT stripe_events_outcome_check;
ALTER TABLE stripe_events ADD CONSTRAINT stripe_events_outcome_check
    CHECK (outcome IN ('applied', 'stale', 'ignored', 'unmatched'));
