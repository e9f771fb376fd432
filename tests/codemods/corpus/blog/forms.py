from flask_wtf import FlaskForm
from wtforms import StringField, TextAreaField
from wtforms.validators import DataRequired


class PostForm(FlaskForm):
    title = StringField("Title", validators=[DataRequired()])
    body = TextAreaField("Body")

    def validate_title(self, field):
        banned = {"spam", "ads"}
        banned.add("casino")
        banned.discard("ads")
        if field.data in banned:
            self.title.errors.append("nope")
        extra = []
        extra.extend(self.body.errors)
