"""Generate the synthetic customer-churn example data set (seeded, so the output is reproducible).

Each customer has several monthly snapshots (``event_time``) — the shape a feature store needs —
with numeric and categorical features and the binary target ``churned`` (left within a month of
the snapshot). Churn follows a logistic model of the features, so models have signal to find.

    python examples/generate_churn.py [--customers 3000] [--seed 7] [--output examples/churn.csv]
"""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

PLANS = ["basic", "standard", "premium"]
PLAN_PRICE = {"basic": 25.0, "standard": 55.0, "premium": 95.0}
REGIONS = ["north", "south", "east", "west", "central"]
CONTRACTS = ["month-to-month", "one-year", "two-year"]
PAYMENT_METHODS = ["card", "bank-transfer", "paypal", "invoice"]
START = datetime(2025, 1, 1)


def generate_churn(customers: int = 3000, seed: int = 7) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows: list[dict[str, object]] = []
    for index in range(customers):
        plan = rng.choice(PLANS, p=[0.45, 0.35, 0.20])
        contract = rng.choice(CONTRACTS, p=[0.55, 0.28, 0.17])
        region = rng.choice(REGIONS)
        payment = rng.choice(PAYMENT_METHODS, p=[0.5, 0.2, 0.2, 0.1])
        partner = bool(rng.random() < 0.45)
        tenure = int(rng.integers(0, 48))
        satisfaction_base = rng.normal(3.6, 0.9)
        usage_base = rng.gamma(2.0, 6.0 if plan == "basic" else 12.0)
        signup = START + timedelta(days=int(rng.integers(0, 120)))
        for month in range(int(rng.integers(3, 9))):
            event_time = signup + timedelta(days=30 * month, hours=int(rng.integers(0, 24)))
            calls = int(rng.poisson(0.6 + 0.8 * (satisfaction_base < 3)))
            usage = max(0.0, usage_base * rng.normal(1.0, 0.15))
            logins = int(rng.poisson(12 if usage > 10 else 5))
            charges = PLAN_PRICE[plan] * rng.normal(1.0, 0.05) + 0.4 * usage
            satisfaction = float(np.clip(round(satisfaction_base + rng.normal(0, 0.4), 1), 1, 5))
            logit = (
                -1.6
                + 0.9 * (contract == "month-to-month")
                - 0.8 * (contract == "two-year")
                + 0.45 * calls
                - 0.7 * (satisfaction - 3.5)
                - 0.035 * (tenure + month)
                + 0.012 * (charges - 50)
                - 0.3 * partner
                + 0.35 * (payment == "invoice")
            )
            churned = int(rng.random() < 1 / (1 + np.exp(-logit)))
            rows.append(
                {
                    "customer_id": f"C{index + 1:05d}",
                    "event_time": event_time,
                    "plan": plan,
                    "region": region,
                    "contract": contract,
                    "payment_method": payment,
                    "has_partner": "yes" if partner else "no",
                    "tenure_months": tenure + month,
                    "monthly_charges": round(charges, 2),
                    "data_usage_gb": round(usage, 2),
                    "support_calls": calls,
                    "logins_30d": logins,
                    # Some surveys go unanswered: a realistic share of missing values.
                    "satisfaction_score": None if rng.random() < 0.06 else satisfaction,
                    "churned": churned,
                }
            )
            if churned:
                break
    return pl.DataFrame(rows).sort("event_time", "customer_id")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--output", type=Path, default=Path(__file__).with_name("churn.csv"))
    args = parser.parse_args()
    frame = generate_churn(customers=args.customers, seed=args.seed)
    frame.write_csv(args.output, datetime_format="%Y-%m-%dT%H:%M:%S")
    print(f"wrote {frame.height} rows × {frame.width} columns to {args.output}")


if __name__ == "__main__":
    main()
