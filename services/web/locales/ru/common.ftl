# Макет, навигация, ошибки и стартовая страница.
app-name = Mailroom
skip-to-content = Перейти к содержимому
nav-home = Главная
nav-mailboxes = Почтовые ящики
nav-invite = Пригласить
nav-invitations = Приглашения
nav-people = Сотрудники
nav-departments = Отделы
nav-access = Права доступа
nav-account = Мой профиль
nav-main = Основное меню
sign-out = Выйти
language = Язык
language-switch = Сменить
lang-en = English
lang-ru = Русский
times-in-zone = Время: { $zone }
count-mailboxes = { $count ->
    [one] { $count } ящик
    [few] { $count } ящика
   *[many] { $count } ящиков
}
home-title = Добро пожаловать, { $name }
home-lead = Что вы хотите сделать?
home-mailboxes = Управление почтовыми ящиками
home-invite = Пригласить сотрудников
home-people = Сотрудники и отделы
home-access = Права доступа
error-title = Что-то пошло не так
error-back = На стартовую страницу
error-not-found = Такой страницы нет, или у вас нет к ней доступа.
error-forbidden = У вас нет на это прав. Попросите администратора вашей организации выдать разрешение.
error-too-large = Форма слишком большая или пришла слишком медленно. Отправьте меньше за один раз.
error-csrf = Срок действия формы истёк. Обновите страницу и попробуйте ещё раз.
error-unavailable = Mailroom сейчас не может ответить. Попробуйте чуть позже.
error-internal = У нас что-то сломалось. Попробуйте ещё раз; если ошибка повторяется, сообщите администратору.
error-too-many = Слишком много попыток. Попробуйте через { $seconds } с.
error-conflict = Кто-то изменил это одновременно с вами. Обновите страницу, чтобы увидеть текущую версию.
error-request-id = Код для администратора: { $id }
session-ended = Сеанс завершён. Войдите снова.
signed-in-as = Вы вошли как { $name }
field-required = Заполните это поле.
save = Сохранить
cancel = Отмена
next-page = Далее
previous-page = Назад
actions = Действия
yes = Да
no = Нет
