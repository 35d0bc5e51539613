# Предложения страниц приглашений (часть D: сторона приглашающего).
inv-tabs = Приглашение сотрудников
inv-tab-invite = Пригласить
inv-tab-list = Приглашения
inv-tab-links = Ссылки для быстрой регистрации
inv-tab-register = Зарегистрировать сотрудника
inv-tab-settings = Настройки организации
inv-seats-line = Занято { $used } из { $limit } { $limit ->
    [one] места
   *[other] мест
}, осталось { $left } { $left ->
    [one] место
    [few] места
   *[many] мест
}
inv-seats-unlimited = Занято { $used } { $used ->
    [one] место
    [few] места
   *[many] мест
}; ограничения нет
inv-no-seats-left = Все места заняты. Освободите место (отзовите ожидающее приглашение или уволите сотрудника) или перейдите на тариф побольше.
inv-not-enough-seats = Для этих адресов не хватает свободных мест: { $left ->
    [0] не осталось ни одного.
    [one] осталось только { $left }.
    [few] осталось только { $left }.
   *[many] осталось только { $left }.
}
inv-could-not = Не получилось:
inv-invite-title = Пригласить сотрудников
inv-emails = Адреса электронной почты
inv-emails-hint = Один или несколько, через пробел, запятую, точку с запятой или с новой строки. Можно и «Имя <адрес>».
inv-department = Отдел
inv-department-hint = Приняв приглашение, сотрудник попадёт в этот отдел.
inv-no-department = Без отдела
inv-message = Ваше сообщение (необязательно)
inv-message-hint = Ваш текст вставляется в письмо-приглашение там, где в тексте ниже стоит { "{" }message{ "}" }.
inv-language = Язык письма
inv-delivery = Как отправить приглашения
inv-delivery-system = Отправит Mailroom
inv-delivery-own = Отправлю сам из своей почтовой программы
inv-delivery-own-hint = Из вашей почтовой программы письмо придёт с вашего адреса — получатели доверяют ему больше. Вы получите личную ссылку каждого, не передавайте их другим.
inv-delivery-system-hint = Mailroom отправит каждому его личную ссылку.
inv-preview = Письмо-приглашение
inv-preview-hint = Текст вашей организации; имена, ссылку и дату Mailroom подставит сам.
inv-subject = Тема:
inv-invite-submit = Пригласить
inv-see-list = К списку приглашений
inv-invite-more = Пригласить ещё
inv-result-title = Приглашения
inv-result-none = Никто не приглашён. Почему — написано в таблице ниже для каждого адреса.
inv-result-sent = { $count ->
    [one] { $count } приглашение отправлено.
    [few] { $count } приглашения отправлены.
   *[many] { $count } приглашений отправлено.
}
inv-result-own = { $count ->
    [one] { $count } приглашение готово. Отправьте его из своей почтовой программы:
    [few] { $count } приглашения готовы. Отправьте каждое из своей почтовой программы:
   *[many] { $count } приглашений готово. Отправьте каждое из своей почтовой программы:
}
inv-composed-title = Что отправить
inv-composed-body = Текст письма
inv-composed-caption = По письму на человека, в каждом его личная ссылка
inv-composed-hint = Ссылка откроет почтовую программу с готовым письмом. Если ничего не открылось, скопируйте личную ссылку в своё письмо.
inv-open-mail = Написать { $email }
inv-rejected-caption = Не приглашены
inv-rejected-malformed = Этот адрес нельзя пригласить
inv-rejected-user = Уже в организации
inv-rejected-invited = Уже приглашён
inv-rejected-duplicate = Дважды в списке
inv-rejected-other = Не приглашён
inv-col-address = Адрес
inv-col-why = Причина
inv-col-detail = Подробности
inv-col-mail = Письмо
inv-col-link = Личная ссылка
inv-col-state = Статус
inv-col-kind = Способ
inv-col-inviter = Пригласил
inv-col-created = Создано
inv-col-expires = Действует до
inv-list-title = Приглашения
inv-list-empty = Подходящих приглашений нет.
inv-pages = Страницы
inv-total = { $count ->
    [one] { $count } приглашение
    [few] { $count } приглашения
   *[many] { $count } приглашений
}
inv-filter-state = Статус
inv-filter-all = Любой статус
inv-filter-email = Адрес содержит
inv-filter-apply = Показать
inv-state-pending = Ожидает
inv-state-awaiting = Ждёт одобрения
inv-state-accepted = Принято
inv-state-expired = Истекло
inv-state-revoked = Отозвано
inv-state-failed = Не доставлено
inv-state-rejected = Отклонено
inv-state-unknown = Неизвестно
inv-kind-email = По почте
inv-kind-direct = Зарегистрирован
inv-kind-link = Ссылка для быстрой регистрации
inv-sent-times = { $count ->
    [one] отправлено { $count } раз
    [few] отправлено { $count } раза
   *[many] отправлено { $count } раз
}
inv-resend = Отправить снова
inv-revoke = Отозвать
inv-delete = Убрать
inv-approve = Одобрить
inv-reject = Отклонить
notice-inv-resend = Приглашение отправлено снова с новой ссылкой; старая больше не работает.
notice-inv-revoke = Приглашение отозвано, место снова свободно.
notice-inv-delete = Приглашение убрано из списка.
notice-inv-approve = Одобрено: сотруднику отправлена его ссылка.
notice-inv-too-soon = Это приглашение отправлено только что. Отправьте его снова чуть позже, чтобы не засыпать человека письмами.
notice-inv-changed = Это приглашение тем временем изменилось (принято, истекло или закрыто кем-то другим); в списке показано его текущее состояние.
notice-inv-reject = Регистрация отклонена.
inv-links-title = Ссылки для быстрой регистрации
inv-links-lead = Поделитесь ссылкой с теми, кто должен присоединиться: они укажут адрес и имя, подтвердят адрес из письма — и готово. Можно ограничить ссылку вашими доменами или одобрять каждого.
inv-links-new = Создать ссылку
inv-links-domains = Разрешённые почтовые домены
inv-links-domains-hint = Например: example.com, example.org. Оставьте пустым, чтобы подходил любой адрес.
inv-links-approval = Каждого одобряет администратор
inv-links-max-uses = Сколько человек могут присоединиться
inv-links-max-uses-hint = Оставьте пустым, чтобы не ограничивать.
inv-links-valid-days = Срок действия (дней)
inv-links-valid-days-hint = 0 — пока вы её не отключите.
inv-links-create = Создать ссылку
inv-links-bad-number = Укажите целые числа человек и дней.
inv-links-created = Ссылка готова. Скопируйте её сейчас и поделитесь:
inv-links-created-hint = Mailroom хранит только отпечаток ссылки, поэтому она показывается один раз. Если потеряете её — отключите и создайте новую.
inv-links-caption = Ссылки вашей организации
inv-links-col-domains = Домены
inv-links-col-approval = Одобрение
inv-links-col-uses = Присоединились
inv-links-any-domain = Любой домен
inv-links-no-expiry = Пока не отключена
inv-links-uses-of = { $uses } из { $max }
inv-links-registrations = { $count ->
    [one] { $count } регистрация
    [few] { $count } регистрации
   *[many] { $count } регистраций
}
inv-links-active = Действует
inv-links-disabled = Отключена
inv-links-disable = Отключить
inv-links-empty = Ссылок пока нет.
notice-inv-link-disabled = Ссылка отключена, присоединиться по ней больше нельзя.
inv-awaiting-title = Ждут одобрения
inv-awaiting-empty = Одобрения никто не ждёт.
inv-register-title = Зарегистрировать сотрудника
inv-register-lead = Добавьте сотрудника в организацию сами: ему придёт письмо со ссылкой, чтобы задать пароль.
inv-first-name = Имя
inv-last-name = Фамилия
inv-email = Адрес электронной почты
inv-position = Должность
inv-register-submit = Зарегистрировать
notice-inv-registered = Сотрудник зарегистрирован: ему отправлена ссылка, чтобы задать пароль.
inv-settings-title = Настройки организации
inv-settings-who = Кто может приглашать сотрудников
inv-settings-allow = Разрешить всем приглашать сотрудников
inv-settings-allow-hint = Если выключено, приглашать могут только администраторы (и роли с правом приглашать).
notice-inv-settings-saved = Настройки сохранены.
