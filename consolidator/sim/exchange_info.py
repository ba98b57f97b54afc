"""exchangeInfo bodies for synthetic symbols (spot and USD-M shapes)."""

from __future__ import annotations

from typing import Any

from consolidator.sim.symbols import SymbolSpec, format_units

__all__ = ["exchange_info"]

_SPOT_ORDER_TYPES = [
    "LIMIT",
    "LIMIT_MAKER",
    "MARKET",
    "STOP_LOSS",
    "STOP_LOSS_LIMIT",
    "TAKE_PROFIT",
    "TAKE_PROFIT_LIMIT",
]
_USDM_ORDER_TYPES = [
    "LIMIT",
    "MARKET",
    "STOP",
    "STOP_MARKET",
    "TAKE_PROFIT",
    "TAKE_PROFIT_MARKET",
    "TRAILING_STOP_MARKET",
]


def _price_filter(spec: SymbolSpec) -> dict[str, Any]:
    max_units = max(spec.tick, 10 ** (spec.price_decimals + 6))
    return {
        "filterType": "PRICE_FILTER",
        "minPrice": spec.price(1),
        "maxPrice": format_units(max_units - max_units % spec.tick, spec.price_decimals),
        "tickSize": spec.price(1),
    }


def _lot_size(spec: SymbolSpec, kind: str) -> dict[str, Any]:
    max_units = 9 * 10 ** (spec.qty_decimals + 6)
    return {
        "filterType": kind,
        "minQty": spec.qty(1),
        "maxQty": format_units(max_units - max_units % spec.step, spec.qty_decimals),
        "stepSize": spec.qty(1),
    }


def _spot_symbol(spec: SymbolSpec, status: str) -> dict[str, Any]:
    return {
        "symbol": spec.symbol,
        "status": status,
        "baseAsset": spec.base,
        "baseAssetPrecision": 8,
        "quoteAsset": spec.quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": _SPOT_ORDER_TYPES,
        "icebergAllowed": True,
        "ocoAllowed": True,
        "otoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True,
        "cancelReplaceAllowed": True,
        "amendAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            _price_filter(spec),
            _lot_size(spec, "LOT_SIZE"),
            {"filterType": "ICEBERG_PARTS", "limit": 10},
            _lot_size(spec, "MARKET_LOT_SIZE"),
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def _usdm_symbol(spec: SymbolSpec, status: str) -> dict[str, Any]:
    return {
        "symbol": spec.symbol,
        "pair": spec.symbol,
        "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000,
        "onboardDate": 1569398400000,
        "status": status,
        "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000",
        "baseAsset": spec.base,
        "quoteAsset": spec.quote,
        "marginAsset": spec.quote,
        "pricePrecision": spec.tick_precision,
        "quantityPrecision": spec.step_precision,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "underlyingSubType": [],
        "settlePlan": 0,
        "triggerProtect": "0.0500",
        "liquidationFee": "0.012500",
        "marketTakeBound": "0.05",
        "filters": [
            _price_filter(spec),
            _lot_size(spec, "LOT_SIZE"),
            _lot_size(spec, "MARKET_LOT_SIZE"),
            {"filterType": "MAX_NUM_ORDERS", "limit": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
            {"filterType": "MIN_NOTIONAL", "notional": "5"},
            {
                "filterType": "PERCENT_PRICE",
                "multiplierUp": "1.0500",
                "multiplierDown": "0.9500",
                "multiplierDecimal": "4",
            },
        ],
        "orderTypes": _USDM_ORDER_TYPES,
        "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
    }


def exchange_info(
    usdm: bool, entries: list[tuple[SymbolSpec, str]], weight_limit: int, server_time: int
) -> dict[str, Any]:
    """The exchangeInfo body for ``(spec, status)`` entries."""
    rate_limits: list[dict[str, Any]] = [
        {
            "rateLimitType": "REQUEST_WEIGHT",
            "interval": "MINUTE",
            "intervalNum": 1,
            "limit": weight_limit,
        },
        {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
    ]
    if usdm:
        quotes = sorted({spec.quote for spec, _ in entries})
        return {
            "timezone": "UTC",
            "serverTime": server_time,
            "futuresType": "U_MARGINED",
            "rateLimits": rate_limits,
            "exchangeFilters": [],
            "assets": [
                {"asset": q, "marginAvailable": True, "autoAssetExchange": "-10000"} for q in quotes
            ],
            "symbols": [_usdm_symbol(spec, status) for spec, status in entries],
        }
    rate_limits.append(
        {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 300000}
    )
    return {
        "timezone": "UTC",
        "serverTime": server_time,
        "rateLimits": rate_limits,
        "exchangeFilters": [],
        "symbols": [_spot_symbol(spec, status) for spec, status in entries],
    }
