"""Every word the report prints, in English and Chinese, from one table.

KPI names are the standard ones a plant's submission uses: 设备综合效率 OEE (ISO 22400-2),
不良品率, 生产周期（平均节拍）, 单位产品综合能耗 (GB/T 36132, in kgce per GB/T 2589),
单位产品碳排放, 运营成本. A Chinese report is the default where the site keeps Chinese
time (:func:`default_lang`): mainland China's zones.
"""

from __future__ import annotations

from typing import Final, Literal

__all__ = ["CHINA_ZONES", "LANGS", "Lang", "default_lang", "kpi_name", "kpi_unit", "tr"]

Lang = Literal["en", "zh"]
LANGS: Final[tuple[Lang, ...]] = ("zh", "en")

CHINA_ZONES: Final[frozenset[str]] = frozenset({
    "Asia/Shanghai", "Asia/Chongqing", "Asia/Chungking", "Asia/Harbin", "Asia/Urumqi",
    "Asia/Kashgar", "PRC",
})
"""The IANA zones of mainland China (the provincial plan's reports are in Chinese)."""


def default_lang(timezone: str) -> Lang:
    """Chinese for a site in a mainland-China zone, English elsewhere."""
    return "zh" if timezone in CHINA_ZONES else "en"


# field -> (English name, Chinese name)
_KPI: Final[dict[str, tuple[str, str]]] = {
    "planned_busy_time_s": ("Planned busy time", "计划运行时间"),
    "producing_time_s": ("Actual production time", "实际生产时间"),
    "setup_time_s": ("Setup time", "调整时间"),
    "unplanned_down_time_s": ("Unplanned down time", "非计划停机时间"),
    "idle_time_s": ("Idle time", "待机时间"),
    "parts_produced": ("Parts produced", "产量"),
    "parts_good": ("Good parts", "合格品数"),
    "parts_scrap": ("Scrap parts", "不良品数"),
    "energy_kwh": ("Energy", "用电量"),
    "co2_kg": ("CO2 emissions", "二氧化碳排放量"),
    "availability": ("Availability", "可用率（时间开动率）"),
    "performance": ("Performance", "性能率（性能开动率）"),
    "quality_ratio": ("Quality ratio", "合格品率"),
    "oee": ("Overall equipment effectiveness (OEE)", "设备综合效率 OEE"),
    "defect_rate": ("Defect rate", "不良品率"),
    "cycle_time_mean_s": ("Production cycle (mean cycle time)", "生产周期（平均节拍）"),
    "energy_per_unit_kwh": ("Energy per unit produced", "单位产量能耗"),
    "energy_per_good_unit_kwh": ("Energy per good unit", "单位产品能耗"),
    "kgce_per_good_unit": ("Standard coal per good unit", "单位产品综合能耗"),
    "co2_per_good_unit_kg": ("CO2 per good unit", "单位产品碳排放"),
    "energy_cost_per_good_unit": ("Operating cost (energy cost per good unit)",
                                  "运营成本（单位产品能源成本）"),
    "observed_s": ("Observed time", "观测时长"),
    "ideal_cycle_time_s": ("Ideal cycle time", "理想节拍"),
    "scrap_all_machines": ("Scrap on all machines", "全线不良品数"),
    "rolled_throughput_yield": ("Rolled throughput yield", "直通率"),
    "natural_gas_m3": ("Natural gas", "天然气用量"),
    "steam_kg": ("Steam", "蒸汽用量"),
    "water_m3": ("Water", "用水量"),
    "compressed_air_m3": ("Compressed air", "压缩空气用量"),
    "kgce": ("Energy as standard coal", "综合能耗"),
    "energy_cost": ("Energy cost", "能源成本"),
}

_UNIT: Final[dict[str, tuple[str, str]]] = {
    "planned_busy_time_s": ("h", "小时"),
    "producing_time_s": ("h", "小时"),
    "setup_time_s": ("h", "小时"),
    "unplanned_down_time_s": ("h", "小时"),
    "idle_time_s": ("h", "小时"),
    "parts_produced": ("parts", "件"),
    "parts_good": ("parts", "件"),
    "parts_scrap": ("parts", "件"),
    "energy_kwh": ("kWh", "kWh"),
    "co2_kg": ("kg CO2", "kg CO₂"),
    "availability": ("%", "%"),
    "performance": ("%", "%"),
    "quality_ratio": ("%", "%"),
    "oee": ("%", "%"),
    "defect_rate": ("%", "%"),
    "cycle_time_mean_s": ("s per part", "秒/件"),
    "energy_per_unit_kwh": ("kWh per part", "kWh/件"),
    "energy_per_good_unit_kwh": ("kWh per good part", "kWh/件"),
    "kgce_per_good_unit": ("kgce per good part", "kgce/件"),
    "co2_per_good_unit_kg": ("kg CO2 per good part", "kg CO₂/件"),
    "energy_cost_per_good_unit": ("CNY per good part", "元/件"),
    "observed_s": ("h", "小时"),
    "ideal_cycle_time_s": ("s per part", "秒/件"),
    "scrap_all_machines": ("parts", "件"),
    "rolled_throughput_yield": ("%", "%"),
    "natural_gas_m3": ("m³", "m³"),
    "steam_kg": ("kg", "kg"),
    "water_m3": ("m³", "m³"),
    "compressed_air_m3": ("m³", "m³"),
    "kgce": ("kgce", "kgce"),
    "energy_cost": ("CNY", "元"),
}

# key -> (English, Chinese); {placeholders} are filled by tr().
_TEXT: Final[dict[str, tuple[str, str]]] = {
    "title": ("KPI report against the baseline", "智能制造示范项目关键指标报告（对比基期）"),
    "subtitle": ("Intelligent-manufacturing and green-factory KPIs of {scope}",
                 "{scope} 智能制造与绿色工厂指标"),
    "scope.site": ("site {id}", "工厂 {id}"),
    "scope.line": ("line {id}", "产线 {id}"),
    "scope.machine": ("machine {id}", "设备 {id}"),
    "scope.of_site": ("{scope} of site {site}", "工厂 {site} {scope}"),
    "period.current": ("Reported period", "报告期"),
    "period.baseline": ("Baseline period", "基期"),
    "period.current.short": ("current", "报告期"),
    "period.baseline.short": ("baseline", "基期"),
    "window": ("Records summed", "汇总记录"),
    "window.value": ("{window} windows", "{window} 窗口"),
    "timezone": ("Time zone", "时区"),
    "generated": ("Generated", "生成时间"),
    "generator": ("edge-agent {version}", "edge-agent {version}"),
    "section.verdicts": ("Targets and verdicts", "目标与达标情况"),
    "section.energy": ("Energy baseline (ISO 50006)", "能源基准（参照 ISO 50006）"),
    "section.trends": ("Trends", "趋势"),
    "section.parts": ("Comparison of machines and lines", "设备与产线对比"),
    "section.coverage": ("Coverage and flags", "数据覆盖与标记"),
    "section.figures": ("All figures", "全部数据"),
    "section.targets": ("Targets applied", "采用的目标"),
    "section.method": ("How the figures are made", "计算方法"),
    "col.kpi": ("KPI", "指标"),
    "col.unit": ("Unit", "单位"),
    "col.baseline": ("Baseline", "基期"),
    "col.current": ("Current", "报告期"),
    "col.change": ("Change", "变化"),
    "col.target": ("Target", "目标"),
    "col.group": ("Target set", "目标类别"),
    "col.requirement": ("Requirement", "要求"),
    "col.required": ("Required value", "目标值"),
    "col.verdict": ("Verdict", "结论"),
    "col.scope": ("Scope", "范围"),
    "col.period": ("Period", "时期"),
    "col.start": ("Window start", "窗口开始"),
    "col.end": ("Window end", "窗口结束"),
    "col.flags": ("Flags", "标记"),
    "col.bucket": ("From", "起始"),
    "col.driver": ("Driver", "驱动变量"),
    "col.slope": ("Slope", "斜率"),
    "col.intercept": ("Base load per window", "每窗口基础负荷"),
    "col.r2": ("R²", "R²"),
    "col.points": ("Points", "点数"),
    "col.used": ("Used", "采用"),
    "col.windows": ("Windows", "窗口数"),
    "col.observed": ("Observed time", "观测时间"),
    "col.energy_windows": ("Windows with energy data", "有能耗数据的窗口"),
    "col.partial": ("Windows observed in part", "部分观测的窗口"),
    "col.complete": ("Complete", "完整"),
    "col.figure": ("Figure", "数据项"),
    "col.field": ("Field", "字段"),
    "col.value": ("Value", "数值"),
    "dir.improved": ("improved", "改善"),
    "dir.worse": ("worse", "变差"),
    "dir.unchanged": ("unchanged", "持平"),
    "dir.up": ("up", "上升"),
    "dir.down": ("down", "下降"),
    "status.met": ("met", "达标"),
    "status.not_met": ("not met", "未达标"),
    "status.not_measured": ("not measured", "未计量"),
    "group.plan-2020": ("Plan 2020", "2020 年目标"),
    "group.plan-2025": ("Plan 2025", "2025 年目标"),
    "group.green-factory": ("Green factory", "绿色工厂"),
    "group.site": ("Site target", "企业自定目标"),
    "kind.reduce_by": ("down {value} vs baseline", "较基期降低 {value}"),
    "kind.reduce_by.zero": ("lower than baseline", "低于基期"),
    "kind.increase_by": ("up {value} vs baseline", "较基期提高 {value}"),
    "kind.increase_by.zero": ("higher than baseline", "高于基期"),
    "kind.at_most": ("at most {value}", "不高于 {value}"),
    "kind.at_least": ("at least {value}", "不低于 {value}"),
    "source.default": ("provincial plan (default)", "省级规划（默认）"),
    "source.file": ("targets file", "目标文件"),
    "yes": ("yes", "是"),
    "no": ("no", "否"),
    "none": ("none", "无"),
    "dash": ("–", "–"),
    "sep": (", ", "，"),
    "note.prefix": ("Note: ", "注："),
    "chart.fit": ("baseline fit", "基期拟合"),
    "hours": ("{value} h", "{value} 小时"),
    "minutes": ("{value} min", "{value} 分钟"),
    "seconds": ("{value} s", "{value} 秒"),
    "cov.windows": ("{found} of {expected} windows", "{found}/{expected} 个窗口"),
    "cov.windows.shift": ("{found} windows", "{found} 个窗口"),
    "cov.no_energy": ("{count} without energy data", "{count} 个无能耗数据"),
    "cov.observed": ("{observed} of {expected} observed", "观测 {observed}/{expected}"),
    "cov.observed.shift": ("{observed} observed", "观测 {observed}"),
    "note.missing": ("the {period} period lacks {count} windows; its sums cover only what "
                     "was recorded",
                     "{period}缺少 {count} 个窗口，其合计仅覆盖已记录的数据"),
    "note.partial": ("the agent observed {count} of the {period} period's windows only in "
                     "part (not running, or started without its checkpoint); their sums "
                     "cover only the observed time",
                     "{period}有 {count} 个窗口仅被部分观测（采集程序未运行，或启动时缺少检查点），"
                     "其合计仅覆盖观测到的时间"),
    "note.energy": ("{period} energy covers {energy} of {windows} windows; the per-unit "
                    "figures divide it by the parts of those windows only",
                    "{period}能耗数据覆盖 {energy}/{windows} 个窗口，单位产品指标仅除以这些窗口的产"
                    "量"),
    "note.flags": ("{period} flags: {flags}", "{period}标记：{flags}"),
    "note.cycle": ("Production cycle is measured by the mean actual cycle time (producing "
                   "time / parts produced).",
                   "生产周期以平均实际节拍（实际生产时间/产量）计量。"),
    "note.cost": ("Operating cost is the energy cost per good unit; it is not measured until "
                  "the records carry energy costs (tariffs configured).",
                  "运营成本以单位合格产品能源成本计量；记录"
                  "中无能源成本（未配置电价）时为“未计量”。"),
    "note.cost.measured": ("Operating cost is the energy cost per good unit, from the "
                           "records' energy costs.",
                           "运营成本以单位合格产品能源成本计量，来自记录中的能源成本。"),
    "note.site_rates": ("The site's records carry no schedule KPIs (OEE and its factors, "
                        "defect rate, cycle time): a site has no single output machine; see "
                        "its lines and machines.",
                        "工厂级记录不含按计划时间计算的指标（设备综合效率及其因子、不良品率、生产周"
                        "期）：工厂没有单一产出"
                        "设备，请见各产线与设备。"),
    "note.change": ("Change = (current - baseline) / baseline of the figure itself, with "
                    "its direction in words: a defect rate from 2.0 % to 1.5 % is -25 %, "
                    "improved.",
                    "变化 =（报告期 - 基期）/ 基期，按指标本身计算，并注明改善或变差：不良品率由 2."
                    "0% 降至 "
                    "1.5% 为 -25%，改善。"),
    "energy.intro": ("Energy of the baseline windows fitted against what drives it (least "
                     "squares, one point per window); the reported period's energy is "
                     "compared with what that model expects for its own production.",
                     "以基期各窗口的能耗对其驱动变量做最小二乘拟合（每窗口一点），将报告期实际能耗"
                     "与模型按报告期"
                     "产量预计的能耗比较。"),
    "energy.driver.parts_produced": ("Parts produced per window", "每窗口产量"),
    "energy.driver.producing_h": ("Producing hours per window", "每窗口生产小时数"),
    "energy.model": ("Model used: energy = {intercept} kWh + {slope} kWh × {driver} "
                     "(R² {r2}, {n} windows)",
                     "采用模型：能耗 = {intercept} kWh + {slope} kWh × {driver}（R² {r2}，{n} 个窗"
                     "口）"),
    "energy.expected": ("Expected energy for the reported period", "报告期预计能耗"),
    "energy.actual": ("Actual energy of the reported period", "报告期实际能耗"),
    "energy.saving": ("Normalized saving", "归一化节能量"),
    "energy.saving_ratio": ("Normalized saving, share of expected", "归一化节能率"),
    "energy.claim": ("The fit is strong enough (R² ≥ {min_r2}, at least {min_n} windows) to "
                     "claim this saving.",
                     "拟合足够可靠（R² ≥ {min_r2}，不少于 {min_n} 个窗口），可据此申报节能量。"),
    "energy.weak_fit": ("The fit is too weak to claim this saving: R² {r2} is below {min_r2}.",
                        "拟合过弱，不能据此申报节能量：R² {r2} 低于 {min_r2}。"),
    "energy.too_few_points": ("Too few baseline windows to claim this saving: {n}, at least "
                              "{min_n} needed.",
                              "基期窗口过少，不能据此申报节能量：{n} 个，至少需要 {min_n} 个。"),
    "energy.outside": ("{count} reported windows lie outside the baseline's range of the "
                       "driver; there the model extrapolates.",
                       "报告期有 {count} 个窗口的驱动变量超出基期范围，模型在此为外推。"),
    "energy.none": ("No energy baseline: the baseline period has fewer than {min_fit} windows "
                    "with energy data whose production varied.",
                    "无法建立能源基准：基期中有能耗数据且产量有变化的窗口少于 {min_fit} 个。"),
    "energy.no_current": ("The reported period has no window with energy data.",
                          "报告期没有有能耗数据的窗口。"),
    "energy.ratio_note": ("The plain ratio, energy per good unit, is in the verdict table; "
                          "the model above corrects it for the production volume.",
                          "单位产品能耗（简单比值）见达标表；上述模型按产量对其进行了修正。"),
    "chart.oee": ("OEE and its factors", "设备综合效率及其因子"),
    "chart.scatter": ("Energy against {driver}, baseline fit",
                      "能耗与{driver}的关系及基期拟合"),
    "chart.parts": ("{kpi} by machine and line", "各设备与产线的{kpi}"),
    "chart.no_data": ("no data", "无数据"),
    "chart.desc": ("{title}: {n} points from {first} to {last}; baseline period shaded.",
                   "{title}：{n} 个数据点，{first} 至 {last}；阴影为基期。"),
    "chart.scatter.desc": ("Energy per window against {driver}: {base} baseline windows "
                           "(circles) and {cur} reported windows (squares); line: the "
                           "baseline fit.",
                           "每窗口能耗与{driver}：基期 {base} 个窗口（圆点）、报告期 {cur} 个窗口（"
                           "方块）；"
                           "直线为基期拟合。"),
    "chart.bars.desc": ("{kpi} of each machine and line, baseline and current.",
                        "各设备与产线的{kpi}，基期与报告期。"),
    "chart.shaded": ("shaded: baseline period", "阴影：基期"),
    "trend.bucket.day": ("One point per day (local time).", "每天一个数据点（当地时间）。"),
    "trend.bucket.hour": ("One point per hour.", "每小时一个数据点。"),
    "trend.bucket.window": ("One point per {window} window.", "每个 {window} 窗口一个数据点。"),
    "trend.data": ("Data behind the trend charts", "趋势图数据"),
    "parts.none": ("A machine's report has no parts to compare.", "单台设备报告无下级对比。"),
    "parts.data": ("Data behind the comparison charts", "对比图数据"),
    "scatter.data": ("The data behind the scatter are the windows of the workbook "
                     "(--format xlsx or csv), each with its energy and parts.",
                     "散点图数据即工作簿（--format xlsx 或 csv）中的各窗口及其能耗与产量。"),
    "method.rates": ("Rates are recomputed from the period's sums, never averaged over "
                     "windows: availability = producing time / planned busy time; OEE = "
                     "ideal cycle time × good parts / planned busy time; defect rate = scrap "
                     "/ parts produced; energy per good unit = energy of the windows with "
                     "energy data / their good parts; standard coal = 0.1229 kgce per kWh "
                     "(GB/T 2589).",
                     "比率均由时期合计重新计算，不对窗口比率取平均：可用率 = 实际生产时间/计划运行"
                     "时间；"
                     "设备综合效率 = 理想节拍 × 合格品数/计划运行时间；不良品率 = 不良品数/产量；单"
                     "位产品能耗 = "
                     "有能耗数据窗口的能耗/其合格品数；折标准煤系数 0"
                     ".1229 kgce/kWh（GB/T 2589）。"),
    "method.records": ("A record delivered twice counts once (the latest copy wins). The "
                       "workbook lists every window summed, so each figure can be recomputed.",
                       "重复送达的记录只计一次（以最新为准）。工作簿列出参与汇总的每个窗口，每个数"
                       "据均可复算。"),
    "sheet.summary": ("Report", "报告"),
    "sheet.targets": ("Targets", "目标"),
    "sheet.energy": ("Energy baseline", "能源基准"),
    "sheet.trend": ("Trend", "趋势"),
    "text.header": ("KPI report: {scope"
                    "}, {window} windows", "关键指标报告：{scope}，{window} 窗口"),
    "text.change_note": ("change = (current - baseline) / baseline of the figure itself; the "
                         "JSON's reduction is its negative, (baseline - current) / baseline",
                         "变化 =（报告期 - 基期）/ 基期，按指标本身计算；JSON 中的 reduction 为其相"
                         "反数，"
                         "即（基期 - 报告期）/ 基期"),
}


def tr(key: str, lang: Lang, **values: object) -> str:
    """The text of ``key`` in ``lang``, its ``{placeholders}`` filled from ``values``."""
    en, zh = _TEXT[key]
    text = zh if lang == "zh" else en
    return text.format(**values) if values else text


def kpi_name(field: str, lang: Lang) -> str:
    """The standard name of a KPI record field (the field itself when it has none)."""
    names = _KPI.get(field)
    if names is None:
        return field
    return names[1] if lang == "zh" else names[0]


def kpi_unit(field: str, lang: Lang) -> str:
    """The unit a field is shown in (hours for times, % for ratios)."""
    units = _UNIT.get(field)
    if units is None:
        return ""
    return units[1] if lang == "zh" else units[0]
