"""Request validation, in the shape of the WTForms forms this shop started with."""


class Form:
    """Holds the submitted ``data`` and the ``errors`` found by ``validate()``."""

    fields = ()
    required = ()

    def __init__(self, formdata):
        formdata = formdata or {}
        self.data = {name: formdata.get(name) for name in self.fields}
        self.errors = {}

    def validate(self):
        for name in self.required:
            if self.data.get(name) in (None, ""):
                self.errors[name] = "This field is required."
        return not self.errors


class SignupForm(Form):
    fields = ("email", "name", "marketing_opt_in")
    required = ("email", "name")

    def validate(self):
        if not super().validate():
            return False
        email = self.data["email"].strip().lower()
        if "@" not in email:
            self.errors["email"] = "Invalid e-mail address."
            return False
        self.data["email"] = email
        self.data["marketing_opt_in"] = bool(self.data.get("marketing_opt_in"))
        return True


class ProfileForm(Form):
    fields = ("name", "marketing_opt_in")


class CheckoutForm(Form):
    """``lines`` is a list of {"sku", "quantity"}; repeated SKUs are merged, zero lines dropped."""

    fields = ("customer_id", "lines")
    required = ("customer_id", "lines")

    def validate(self):
        if not super().validate():
            return False
        lines = [dict(line) for line in self.data["lines"]]
        seen = set()
        for line in list(lines):
            quantity = int(line.get("quantity") or 0)
            if quantity <= 0:
                lines.remove(line)
                continue
            if line["sku"] in seen:
                first = next(other for other in lines if other["sku"] == line["sku"])
                first["quantity"] += quantity
                lines.remove(line)
                continue
            seen.add(line["sku"])
            line["quantity"] = quantity
        if not lines:
            self.errors["lines"] = "The order has no items."
            return False
        self.data["lines"] = lines
        return True


class PaymentForm(Form):
    fields = ("amount_cents", "method", "card_last4")
    required = ("amount_cents", "method")
