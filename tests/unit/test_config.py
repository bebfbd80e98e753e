"""operators.config: defaults, unknown keys and bad values fail at load, naming what is wrong."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from operators.config import (
    ChainConfig,
    Config,
    ConfigError,
    RunConfig,
    config_toml,
    load_config,
    parse_config,
)
from operators.liquidation import LiquidationParams
from operators.margin import LiquidityTier, MarginParams, OptionMarginParams
from operators.registry import DEFAULT_SOURCES, Registry
from operators.stages import stage_params
from operators.units import InstrumentKind

POOL = "0x0000000000000000000000000000000000000001"


def _source(**fields: object) -> str:
    """One ``[[oracle.sources]]`` table; strings quoted, numbers as they are."""
    body = "\n".join(f"{k} = {v!r}".replace("'", '"') for k, v in fields.items())
    return f"[[oracle.sources]]\n{body}\n"


def _fails(text: str) -> str:
    """The message of loading ``text`` and building the stages from it, as at start-up."""
    with pytest.raises(ConfigError) as info:
        stage_params(load_config(text))
    return str(info.value)


# --- defaults -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", [None, "", "# nothing but a comment\n"], ids=["none", "empty", "comment"]
)
def test_defaults_load(text: str | None) -> None:
    cfg = load_config(text)
    assert cfg == Config()
    assert (cfg.topics.chain_logs, cfg.topics.dex_quotes, cfg.topics.deadletter) == (
        "chain.logs", "dex.quotes", "deadletter",
    )  # fmt: skip
    oracle = stage_params(cfg).oracle
    assert (oracle.window_ms, stage_params(cfg).intake.lateness_ms, oracle.min_sources) == (
        60_000,
        10_000,
        3,
    )
    assert cfg.oracle.pegs == {"USD": "1", "USDC": "1", "USDT": "1"}


def test_default_registry_has_the_builtin_pools_priced_in_usd() -> None:
    registry = Registry.from_config(load_config(None).oracle)
    assert set(registry.by_address) == {s["address"] for s in DEFAULT_SOURCES}
    assert registry.assets == ("BTC", "ETH")
    assert registry.crosses == {"ETH": ("BTC",)}  # BTC is also priced through WBTC/WETH
    assert registry.pegs == {"USD": 1.0, "USDC": 1.0, "USDT": 1.0}
    assert registry.asset_of("WETH") == "ETH" and registry.asset_of("XYZ") == "XYZ"


def test_values_given_replace_the_defaults() -> None:
    cfg = load_config(
        '[topics]\nchain_logs = "mainnet.logs"\n[oracle]\nwindow_s = 30\nmin_sources = 2\n'
    )
    assert cfg.topics.chain_logs == "mainnet.logs"
    assert (stage_params(cfg).oracle.window_ms, cfg.oracle.min_sources) == (30_000, 2)


def test_without_default_registry_only_configured_sources_are_registered() -> None:
    text = "[oracle]\nuse_default_registry = false\n" + _source(
        address=POOL, kind="chainlink", base="ETH", quote="USD", decimals=8
    )
    registry = Registry.from_config(load_config(text).oracle)
    assert list(registry.by_address) == [POOL]
    assert registry.assets == ("ETH",)


# --- unknown keys -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "where"),
    [
        pytest.param("bogus = 1\n", "bogus", "", id="top-level"),
        pytest.param("[oracel]\nwindow_s = 30\n", "oracel", "", id="misspelt-table"),
        pytest.param("[oracle]\nwindw_s = 30\n", "windw_s", "$.oracle", id="in-oracle"),
        pytest.param('[topics]\nprices = "p"\n', "prices", "$.topics", id="in-topics"),
        pytest.param(
            _source(address=POOL, kind="uniswap_v3", token0="USDC", token1="WETH", fee=500),
            "fee",
            "$.oracle.sources[0]",
            id="in-oracle-sources",
        ),
        pytest.param(
            '[oracle.tokens.DAI]\ndecimals = 18\nasset = "DAI"\nsymbol = "DAI"\n',
            "symbol",
            "$.oracle.tokens",
            id="in-oracle-tokens",
        ),
    ],
)
def test_unknown_key_fails_naming_the_key(text: str, key: str, where: str) -> None:
    message = _fails(text)
    assert f"unknown field `{key}`" in message
    assert where in message


# --- bad values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("[oracle]\nwindow_s = 0\n", "window_s must be > 0; got 0", id="window-zero"),
        pytest.param(
            "[oracle]\nwindow_s = -60\n", "window_s must be > 0; got -60", id="window-negative"
        ),
        pytest.param(
            "[oracle]\nwindow_s = 0.0005\n",
            "window_s must be a whole number of ms",
            id="window-sub-ms",
        ),
        pytest.param(
            "[oracle]\nmin_sources = 0\n", "min_sources must be >= 1; got 0", id="min-sources-zero"
        ),
        pytest.param(
            "[oracle]\nmax_age_s = nan\n",
            "expected a finite number, got nan - at `$.oracle.max_age_s`",
            id="max-age-nan",
        ),
        pytest.param(
            "[oracle]\nallowed_lateness_s = -1\n", "allowed_lateness_s must be >= 0", id="lateness"
        ),
        pytest.param(
            "[oracle]\nmin_sources = true\n", "Expected `int`, got `bool`", id="bool-for-int"
        ),
        pytest.param(
            '[oracle]\nwindow_s = "60"\n', "Expected `float`, got `str`", id="str-for-float"
        ),
        pytest.param(
            "[run]\nbatch_size = 0\n", "batch_size must be >= 1; got 0", id="batch-size-zero"
        ),
        pytest.param(
            '[oracle.pegs]\nUSD = "abc"\n',
            "pegs.USD must be a positive decimal string, 1e-12..1e+12; got 'abc'",
            id="peg-abc",
        ),
        pytest.param(
            '[oracle.pegs]\nUSD = "-1"\n',
            "pegs.USD must be a positive decimal string, 1e-12..1e+12; got '-1'",
            id="peg-negative",
        ),
        pytest.param(
            '[oracle.pegs]\nUSD = "NaN"\n',
            "pegs.USD must be a positive decimal string, 1e-12..1e+12; got 'NaN'",
            id="peg-nan",
        ),
        pytest.param(
            '[oracle.tokens.DAI]\ndecimals = 99\nasset = "DAI"\n',
            "decimals must be in 0..36; got 99",
            id="token-decimals",
        ),
    ],
)
def test_bad_oracle_value_fails_naming_key_and_value(text: str, expected: str) -> None:
    assert expected in _fails(text)


@pytest.mark.parametrize(
    "address",
    [
        "0xABC",
        "0x0D4A11D5EEAAC28EC3F61D100DAF4D40471F1852",  # checksum/upper case: keys are lower
        "0d4a11d5eeaac28ec3f61d100daf4d40471f1852",
        "0x0d4a11d5eeaac28ec3f61d100daf4d40471f18",
        "0x0d4a11d5eeaac28ec3f61d100daf4d40471f18zz",
    ],
)
def test_bad_source_address_fails_naming_the_address(address: str) -> None:
    message = _fails(_source(address=address, kind="uniswap_v2", token0="USDC", token1="WETH"))
    assert "address must be a lower-case 0x-prefixed 20-byte hex string" in message
    assert repr(address) in message
    assert "$.oracle.sources[0]" in message


def test_unknown_source_kind_fails_naming_the_kinds() -> None:
    message = _fails(_source(address=POOL, kind="curve", token0="USDC", token1="WETH"))
    assert "Invalid enum value 'curve'" in message
    assert "$.oracle.sources[0].kind" in message


def test_pool_naming_an_undeclared_token_fails_naming_token_and_pool() -> None:
    message = _fails(_source(address=POOL, kind="uniswap_v2", token0="FOO", token1="WETH"))
    assert "'FOO'" in message and POOL in message and "oracle.tokens" in message


def test_pool_without_both_tokens_fails() -> None:
    message = _fails(_source(address=POOL, kind="uniswap_v3", token0="USDC"))
    assert "a uniswap_v3 source needs token0 and token1" in message and POOL in message


def test_pool_base_that_is_neither_token_fails() -> None:
    message = _fails(
        _source(address=POOL, kind="uniswap_v3", token0="USDC", token1="WETH", base="WBTC")
    )
    assert "base must be token0 or token1; got 'WBTC'" in message


def test_chainlink_source_without_decimals_fails() -> None:
    message = _fails(_source(address=POOL, kind="chainlink", base="ETH", quote="USD"))
    assert "a chainlink source needs base, quote and decimals" in message


@pytest.mark.parametrize(("key", "value"), [("weight", 0), ("weight", -1.5), ("max_age_s", 0)])
def test_non_positive_source_weight_or_age_fails(key: str, value: float) -> None:
    source = {
        "address": POOL,
        "kind": "chainlink",
        "base": "ETH",
        "quote": "USD",
        "decimals": 8,
        key: value,
    }
    assert f"{key} must be > 0; got {value!r}" in _fails(_source(**source))


def test_source_quoted_in_an_unpegged_asset_without_usd_route_fails() -> None:
    text = (
        '[oracle.tokens.FOO]\ndecimals = 18\nasset = "FOO"\n'
        '[oracle.tokens.BAR]\ndecimals = 6\nasset = "BAR"\n'
        + _source(address=POOL, kind="uniswap_v2", token0="FOO", token1="BAR")
    )
    message = _fails(text)
    assert POOL in message and "quotes FOO in BAR" in message
    assert "no source priced in a pegged asset" in message and "'USD'" in message


def test_chainlink_feed_quoted_in_an_unpriced_asset_fails() -> None:
    message = _fails(_source(address=POOL, kind="chainlink", base="FOO", quote="EUR", decimals=8))
    assert "quotes FOO in EUR" in message


def test_empty_pegs_leave_the_default_pools_without_a_usd_route() -> None:
    message = _fails("[oracle]\npegs = {}\n")
    assert "no source priced in a pegged asset ([])" in message


def test_duplicate_topic_names_fail_naming_the_name() -> None:
    message = _fails('[topics]\norders = "chain.logs"\n')
    assert "topic names must differ" in message and "'orders': 'chain.logs'" in message


@pytest.mark.parametrize("name", ["", "has space"])
def test_bad_topic_name_fails(name: str) -> None:
    assert f"topics.deadletter must be a topic name; got {name!r}" in _fails(
        f'[topics]\ndeadletter = "{name}"\n'
    )


# --- gaps found while writing these tests (see the report) ----------------------------------


def test_infinite_peg_fails() -> None:
    assert "pegs.EUR" in _fails(
        '[oracle.pegs]\nUSD = "1"\nUSDC = "1"\nUSDT = "1"\nEUR = "Infinity"\n'
    )


def test_negative_chainlink_decimals_fail() -> None:
    assert "decimals" in _fails(
        _source(address=POOL, kind="chainlink", base="ETH", quote="USD", decimals=-3)
    )


def test_two_sources_with_the_same_address_fail() -> None:
    one = _source(address=POOL, kind="chainlink", base="ETH", quote="USD", decimals=8)
    two = _source(address=POOL, kind="chainlink", base="BTC", quote="USD", decimals=8)
    assert POOL in _fails(one + two)


# --- invalid TOML -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "where"),
    [
        pytest.param("[oracle\nwindow_s = 1\n", "line 1", id="unclosed-table"),
        pytest.param("[oracle]\nwindow_s = \n", "line 2", id="missing-value"),
        pytest.param("[oracle]\nwindow_s = 1\nwindow_s = 2\n", "line 3", id="duplicate-key"),
    ],
)
def test_invalid_toml_fails_clearly(text: str, where: str) -> None:
    message = _fails(text)
    assert message.startswith("configuration is not valid TOML: ")
    assert where in message


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ("[risk.liquidation]\nbonnus = 0.08\n", ["`bonnus`", "$.risk.liquidation`"]),
        ("[risk.liquidation]\nbonus = 2.0\n", ["LiquidationParams.bonus", "2.0"]),
        ("[risk.margin.portfolio]\nim_factor = 0.5\n", ["PortfolioParams.im_factor", "0.5"]),
        ("[risk.hedge]\ncost = -1.0\n", ["HedgeParams.cost", "-1.0", "$.risk.hedge`"]),
        ("[risk]\nshards = 0\n", ["shards", "0"]),
        (
            "[risk.margin.tier]\ninitial_margin_ppm = 0.05\n",
            ["Expected `int`, got `float`", "$.risk.margin.tier.initial_margin_ppm`"],
        ),
        (
            "[risk.margin.option]\nmax_spot = 0.2\n",
            ["unknown field `max_spot`", "$.risk.margin.option`"],
        ),
        (
            '[risk.margin.portfolio]\nspot_shocks = ["-0.1"]\n',
            ["Expected `float`, got `str`", "$.risk.margin.portfolio.spot_shocks[0]`"],
        ),
        (
            "[risk.margin]\nhaircuts = { ETH = 1.5 }\n",
            ["MarginParams.haircuts['ETH']", "1.5", "$.risk.margin`"],
        ),
    ],
)
def test_bad_risk_parameters_fail_naming_key_and_value(toml: str, named: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(toml)
    assert all(text in str(info.value) for text in named), str(info.value)


def test_risk_parameters_override_the_defaults() -> None:
    cfg = load_config(
        "[risk.liquidation]\nbonus = 0.08\n[risk.margin.portfolio]\nim_factor = 1.5\n"
        "spot_shocks = [-0.1, 0.0, 0.1]\n[risk.hedge]\ncost = 0.001\n"
    )
    margin, liquidation, hedge = cfg.risk.margin, cfg.risk.liquidation, cfg.risk.hedge
    assert (liquidation.bonus, margin.portfolio.im_factor, hedge.cost) == (0.08, 1.5, 0.001)
    assert margin.portfolio.spot_shocks == (-0.1, 0.0, 0.1)
    # the rest keep their defaults
    assert liquidation == msgspec.structs.replace(LiquidationParams(), bonus=0.08)
    assert margin.tier == LiquidityTier() and margin.option == OptionMarginParams()
    assert load_config(None).risk.margin == MarginParams()


def test_configured_haircuts_are_merged_over_the_defaults() -> None:
    margin = load_config("[risk.margin]\nhaircuts = { ETH = 0.3, LINK = 0.4 }\n").risk.margin
    table = margin.haircut_table()
    assert (table["ETH"], table["LINK"], table["USDT"]) == (0.3, 0.4, 0.02)
    assert table == {**MarginParams().haircut_table(), "ETH": 0.3, "LINK": 0.4}
    assert margin.haircut_vector(["USDC", "ETH", "WBTC"]).tolist() == [0.0, 0.3, 0.25]


def test_configured_instrument_kind_is_an_instrument_kind_else_fails_naming_the_key() -> None:
    table = f'[risk.instruments."0x{"1" * 64}"]\nunderlying = "0x{"e" * 40}"\n'
    (instrument,) = load_config(table + "kind = 1\n").risk.instruments.values()
    assert instrument.kind is InstrumentKind.PERP
    message = _fails(table + "kind = 5\n")
    assert "Invalid enum value 5" in message and "$.risk.instruments[...].kind" in message


# --- config_toml: the writer, checked as the inverse of load_config --------------------

TOKEN = "0x00000000000000000000000000000000000000aa"
FULL = load_config(f"""
[topics]
chain_logs = "a.logs"
dex_quotes = "a.quotes"
oracle_prices = "a.prices"
orders = "a.orders"
fills = "a.fills"
deadletter = "a.dead"

[oracle]
window_s = 30.0
allowed_lateness_s = 5.0
max_age_s = 120.0
max_future_s = 600.0
min_sources = 2
mad_k = 4.0
mad_floor_bps = 5.0
jump_threshold = 0.2
breaker_confirm_sources = 2
breaker_confirm_windows = 4
correction_windows = 10
assets = ["EUR"]
pegs = {{ USD = "1", USDC = "0.999" }}
use_default_registry = false
[oracle.tokens.LINK]
decimals = 18
asset = "LINK"
[oracle.tokens.USDC]
decimals = 6
asset = "USDC"
[[oracle.sources]]
address = "{POOL}"
kind = "uniswap_v3"
token0 = "LINK"
token1 = "USDC"
base = "LINK"
weight = 1e6
max_age_s = 60.0
[[oracle.sources]]
address = "0x0000000000000000000000000000000000000002"
kind = "chainlink"
base = "LINK"
quote = "USD"
decimals = 8

[chain]
rpc_url = "https://node.example:8545"
chain_id = 1
confirmations = 2
reorg_depth = 32
backfill_blocks = 10
min_range = 2
max_range = 500
poll_interval_s = 0.5
rpc_timeout_s = 5.0
contracts = ["{TOKEN}"]

[risk]
venue = "{TOKEN}"
shards = 8
underlyings = {{ "{TOKEN}" = "LINK" }}
books = {{ "{TOKEN}" = {{ LINK = "0x{"11" * 32}" }} }}
targets = {{ "{TOKEN}" = {{ LINK = -2.5 }} }}
liquidation_timeout_s = 60.0
risk_change = 0.05
risk_min_interval_s = 1.0
risk_interval_s = 600.0
vol_half_life_s = 3600.0
vol_floor = 0.1
vol_cap = 2.0
iv_max_age_s = 60.0
liquidation = {{ bonus = 0.04 }}
hedge = {{ min_band_usd = 500.0 }}
[risk.collateral."{TOKEN}"]
asset = "LINK"
decimals = 18
[risk.instruments."0x{"22" * 32}"]
underlying = "{TOKEN}"
kind = 2
strike = 20.0
expiry_s = 1767225600
[risk.margin]
rate = 0.01
haircuts = {{ LINK = 0.3 }}
tier = {{ initial_margin_ppm = 100000 }}
portfolio = {{ im_factor = 1.5 }}

[run]
batch_size = 10
epoch_interval_s = 0.5
""")


def _generated() -> Config:
    from flows.cli.generate import GenerateParams, generate

    return generate(GenerateParams(minutes=1, chain_logs_topic="x.logs")).config


def _devchain() -> Config:
    from connectors.contracts import Deployed, devchain_config
    from connectors.uniswap import UniswapDeployed

    addresses = ["0x" + f"{n:02x}" * 20 for n in range(1, 12)]
    uniswap = UniswapDeployed(
        deployer=addresses[0], tokens={"USDC": addresses[6], "WETH": addresses[7]},
        decimals={"USDC": 6, "WETH": 18}, caller=addresses[8], v2_factory=addresses[9],
        v3_factory=addresses[10], v2_pair=addresses[3], v3_pools={500: addresses[4]}, block=1,
    )  # fmt: skip
    deployed = Deployed(
        chain_id=31337, block=1, deployer=addresses[0], liquidator=addresses[1],
        venue=addresses[2], feed=addresses[5], uniswap=uniswap, split_swap="0x" + "0c" * 20,
    )  # fmt: skip
    return devchain_config(deployed, "http://127.0.0.1:8545")


@pytest.mark.parametrize("make", [lambda: FULL, _generated, _devchain, Config])
def test_config_toml_loads_back_as_the_same_config(make: Callable[[], Config]) -> None:
    cfg = make()
    assert load_config(config_toml(cfg)) == cfg


def test_config_toml_writes_only_values_that_differ_from_the_defaults() -> None:
    assert config_toml(Config()) == ""
    text = config_toml(msgspec.structs.replace(FULL, chain=ChainConfig(), run=RunConfig()))
    assert "[chain]" not in text and "[run]" not in text  # so a tool can append them
    assert "[topics]" in text and "[risk.margin]" in text


@given(keep=st.sets(st.sampled_from([f.name for f in msgspec.structs.fields(Config)])))
def test_config_toml_round_trips_any_mix_of_default_and_set_tables(keep: set[str]) -> None:
    cfg = Config(**{name: getattr(FULL, name) for name in keep})
    try:
        parse_config(msgspec.to_builtins(cfg))  # checks what crosses tables
    except ConfigError:  # e.g. a risk table naming tokens the default oracle lacks
        assume(False)
    assert load_config(config_toml(cfg)) == cfg


DURATIONS = [
    ("oracle", "window_s"), ("oracle", "allowed_lateness_s"), ("oracle", "max_age_s"),
    ("oracle", "max_future_s"), ("run", "epoch_interval_s"), ("chain", "poll_interval_s"),
    ("chain", "rpc_timeout_s"), ("risk", "liquidation_timeout_s"),
    ("risk", "risk_min_interval_s"), ("risk", "risk_interval_s"),
    ("risk", "vol_half_life_s"), ("risk", "iv_max_age_s"),
]  # fmt: skip


@pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
@pytest.mark.parametrize(("table", "key"), DURATIONS, ids=lambda x: x)
def test_inf_in_every_config_duration_fails_naming_the_key(
    table: str, key: str, value: str
) -> None:
    message = _fails(f"[{table}]\n{key} = {value}\n")
    assert f"`$.{table}.{key}`" in message and value.lstrip("-") in message


@pytest.mark.parametrize(("table", "key"), DURATIONS, ids=lambda x: x)
def test_a_duration_beyond_100_years_fails_naming_the_key(table: str, key: str) -> None:
    assert f"{key} must be <= 3.1536e+09 s (100 years); got 1e+300" in _fails(
        f"[{table}]\n{key} = 1e300\n"
    )


@pytest.mark.parametrize(
    "text",
    [
        "[oracle]\nmad_k = inf\n",
        "[oracle]\njump_threshold = nan\n",
        "[risk]\nvol_cap = inf\n",
        "[risk.margin]\nrate = nan\n",
        "[risk.margin.portfolio]\nspot_shocks = [-0.1, inf]\n",
        "[risk.liquidation]\nbonus = inf\n",
        "[risk.hedge]\ncost = -inf\n",
        '[risk.targets."0x' + "ab" * 20 + '"]\nETH = inf\n',
        '[[oracle.sources]]\naddress = "0x' + "11" * 20 + '"\nkind = "chainlink"\n'
        'base = "X"\nquote = "USD"\ndecimals = 8\nweight = inf\n',
    ],
    ids=["mad_k", "jump_threshold", "vol_cap", "margin.rate", "spot_shocks", "bonus",
         "hedge.cost", "targets", "source.weight"],
)  # fmt: skip
def test_inf_or_nan_in_any_config_number_fails_naming_its_path(text: str) -> None:
    assert "expected a finite number" in _fails(text)
