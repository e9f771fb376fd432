"""Price rules applied at checkout. Each rule takes the running context and may discount it."""


class BulkDiscount:
    """10% off a line of ten or more of the same item."""

    def __call__(self, context):
        for line in context["lines"]:
            if line["quantity"] >= 10:
                line["unit_price_cents"] = line["unit_price_cents"] * 9 // 10
        return context


class RulePipeline:
    """Runs the rules in order; ``execute`` returns the priced lines."""

    def __init__(self, rules):
        self.rules = list(rules)

    def execute(self, lines):
        context = {"lines": [dict(line) for line in lines]}
        for rule in self.rules:
            context = rule(context)
        return context["lines"]


checkout_rules = RulePipeline([BulkDiscount()])
